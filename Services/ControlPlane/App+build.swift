import ClickHouse
import Contracts
import HTTPClient
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
    let clickhouse = ClickHouseClient(configuration: .init(url: configuration.clickhouseURL), http: HTTPClient())
    let connection = try NatsConnection.connect(.init(url: configuration.common.natsURL, name: "control-plane"))
    let host = ServiceHost(
        name: .controlPlane,
        configuration: configuration.common,
        connection: connection,
        checks: [
            ReadinessCheck("postgres") { try await database.ping() },
            ReadinessCheck("clickhouse") { try await clickhouse.ping() },
        ],
        registry: registry,
        logger: logger
    )
    return host.makeServiceGroup()
}
