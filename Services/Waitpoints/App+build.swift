import Contracts
import Logging
import Nats
import Postgres
import Prometheus
import Redis
import ServiceKit
import ServiceLifecycle

/// Connects the waitpoints service's dependencies, applies its migrations and assembles its services.
func buildServiceGroup(
    _ configuration: WaitpointsConfiguration,
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
        try await WaitpointsSchema.migrator.run(on: database, logger: logger)
    }
    let redis = try RedisClient(configuration: .init(url: configuration.redisURL))
    let connection = try await NatsConnection.connect(.init(url: configuration.common.natsURL, name: "waitpoints"))
    let jetStream = try JetStream(connection: connection)
    try await retryingAtStartup("nats", logger: logger, isRetriable: { ($0 as? NatsError)?.isRetriable ?? false }) {
        _ = try await jetStream.createOrUpdateStream(WaitpointEngine.eventStreamConfiguration())
    }
    let store = WaitpointStore(database: database)
    let events = EventPublisher(jetStream: jetStream, store: store, logger: logger)
    let engine = WaitpointEngine(
        store: store,
        registry: WaitRegistry(redis: redis),
        connection: connection,
        jetStream: jetStream,
        events: events,
        settled: SettledSignals(connection: connection),
        logger: logger
    )
    let host = ServiceHost(
        name: .waitpoints,
        configuration: configuration.common,
        connection: connection,
        checks: [
            ReadinessCheck("postgres") { try await database.ping() },
            // Waiters still complete without it, through PostgreSQL.
            ReadinessCheck("redis", essential: false) { try await redis.ping() },
        ],
        work: [
            events,
            engine.settled,
            AppendConsumer(engine: engine, durableName: configuration.consumerName, logger: logger),
            TimeoutSweeper(
                engine: engine,
                interval: configuration.sweepInterval,
                consumer: configuration.consumerName,
                logger: logger
            ),
        ],
        registry: registry,
        logger: logger
    )
    WaitpointRoutes(engine: engine).add(
        to: host.router,
        authenticator: NatsAuthenticator(connection: connection)
    )
    return host.makeServiceGroup()
}
