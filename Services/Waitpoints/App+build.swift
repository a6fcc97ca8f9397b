import Contracts
import Logging
import Nats
import Postgres
import Prometheus
import Redis
import ServiceKit
import ServiceLifecycle

/// Connects the waitpoints service's dependencies and assembles its services.
func buildServiceGroup(
    _ configuration: WaitpointsConfiguration,
    registry: PrometheusCollectorRegistry,
    logger: Logger
) async throws -> ServiceGroup {
    let database = PostgresClient(
        configuration: .init(url: configuration.databaseURL, poolSize: configuration.databasePoolSize)
    )
    let redis = try RedisClient(configuration: .init(url: configuration.redisURL))
    let connection = try await NatsConnection.connect(.init(url: configuration.common.natsURL, name: "waitpoints"))
    let host = ServiceHost(
        name: .waitpoints,
        configuration: configuration.common,
        connection: connection,
        checks: [
            ReadinessCheck("postgres") { try await database.ping() },
            ReadinessCheck("redis") { try await redis.ping() },
        ],
        registry: registry,
        logger: logger
    )
    return host.makeServiceGroup()
}
