import ClickHouse
import Contracts
import HTTPClient
import Hummingbird
import Logging
import Nats
import Postgres
import Prometheus
import ServiceKit
import ServiceLifecycle

/// Connects the control plane's dependencies, applies its migrations and assembles its services.
func buildServiceGroup(
    _ configuration: ControlPlaneConfiguration,
    registry: PrometheusCollectorRegistry,
    logger: Logger
) async throws -> ServiceGroup {
    let database = PostgresClient(
        configuration: .init(url: configuration.databaseURL, poolSize: configuration.databasePoolSize)
    )
    try await retryingAtStartup(
        "postgres",
        logger: logger,
        isRetriable: { ($0 as? PostgresError)?.isRetriable ?? false }
    ) {
        try await ControlPlaneSchema.migrator.run(on: database, logger: logger)
    }
    let clickhouse = ClickHouseClient(
        configuration: .init(url: configuration.clickhouseURL, database: configuration.clickhouseDatabase),
        http: HTTPClient()
    )
    let connection = try await NatsConnection.connect(.init(url: configuration.common.natsURL, name: "control-plane"))
    let events = SessionEventRelay(database: database, jetStream: try JetStream(connection: connection), logger: logger)
    try await retryingAtStartup("nats", logger: logger, isRetriable: { ($0 as? NatsError)?.isRetriable ?? false }) {
        try await events.prepare()
    }
    let api = ControlPlaneAPI(
        database: database,
        clickhouse: clickhouse,
        events: events,
        tokenSettings: configuration.tokens,
        adminToken: configuration.adminToken
    )
    let host = ServiceHost(
        name: .controlPlane,
        configuration: configuration.common,
        connection: connection,
        checks: [
            ReadinessCheck("postgres") { try await database.ping() },
            // Only listing needs it.
            ReadinessCheck("clickhouse", essential: false) { try await clickhouse.ping() },
        ],
        endpoints: api.endpoints,
        work: [events],
        registry: registry,
        logger: logger
    )
    api.addRoutes(to: host.router)
    return host.makeServiceGroup()
}

/// The control plane's public routes and NATS endpoints over its stores.
struct ControlPlaneAPI: Sendable {
    let store: SessionStore
    let environments: EnvironmentStore
    let authenticator: ControlPlaneAuthenticator
    let routes: SessionRoutes
    let admin: AdminRoutes

    init(
        database: PostgresClient,
        clickhouse: ClickHouseClient,
        events: SessionEventRelay,
        tokenSettings: AccessTokenSettings,
        adminToken: String?
    ) {
        store = SessionStore(database: database)
        environments = EnvironmentStore(database: database)
        authenticator = ControlPlaneAuthenticator(environments: environments, settings: tokenSettings)
        routes = SessionRoutes(
            store: store,
            environments: environments,
            events: events,
            tokenSettings: tokenSettings,
            listing: SessionListing(clickhouse: clickhouse, store: store)
        )
        admin = AdminRoutes(tenancy: Tenancy(database: database), adminToken: adminToken)
    }

    var endpoints: [NatsEndpoint] { ControlPlaneEndpoints.make(store: store, authenticator: authenticator) }

    func addRoutes(to router: Router<APIRequestContext>) {
        routes.add(to: router, authenticator: authenticator)
        admin.add(to: router)
        OpenAPIDocument.add(to: router)
    }
}
