import ClickHouse
import Contracts
import HTTPClient
import Logging
import Nats
import Postgres
import Prometheus
import Redis
import ServiceKit
import ServiceLifecycle

/// Connects the replicator's dependencies and assembles its services.
func buildServiceGroup(
    _ configuration: ReplicatorConfiguration,
    registry: PrometheusCollectorRegistry,
    logger: Logger
) async throws -> ServiceGroup {
    let database = PostgresClient(configuration: .init(url: configuration.databaseURL, poolSize: 2))
    let redis = try RedisClient(configuration: .init(url: configuration.redisURL, poolSize: 2))
    let clickhouse = ClickHouseClient(
        configuration: .init(url: configuration.clickhouseURL, database: configuration.clickhouseDatabase),
        http: HTTPClient()
    )
    let connection = try await NatsConnection.connect(.init(url: configuration.common.natsURL, name: "replicator"))
    let replicator = SessionReplicator(
        settings: configuration.replication,
        database: database,
        redis: redis,
        clickhouse: clickhouse,
        logger: logger
    )
    let host = ServiceHost(
        name: .replicator,
        configuration: configuration.common,
        connection: connection,
        checks: [
            ReadinessCheck("postgres") { try await database.ping() },
            ReadinessCheck("redis") { try await redis.ping() },
            ReadinessCheck("clickhouse") { try await clickhouse.ping() },
        ],
        work: [replicator],
        registry: registry,
        logger: logger
    )
    return host.makeServiceGroup()
}
