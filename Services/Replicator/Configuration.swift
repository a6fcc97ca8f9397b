import ServiceKit

/// Configuration of the replicator, read once in `main`.
///
/// Keys: the common ones (see `CommonConfiguration`; HTTP port default 3004),
/// `SESSIONS_DATABASE_URL` (default `postgresql://postgres@127.0.0.1:5432/sessions`; the role
/// needs the replication privilege), `SESSIONS_REDIS_URL` (default `redis://127.0.0.1:6379`),
/// `SESSIONS_CLICKHOUSE_URL` (default `http://127.0.0.1:8123`), `SESSIONS_CLICKHOUSE_DATABASE`
/// (default `default`), `SESSIONS_REPLICATION_SLOT` (default `sessions_to_clickhouse_v1`),
/// `SESSIONS_REPLICATION_PUBLICATION` (default `sessions_to_clickhouse_v1_publication`),
/// `SESSIONS_REPLICATION_BATCH_SIZE` (1–100000, default 1000), `SESSIONS_REPLICATION_FLUSH_MS`
/// (10–60000, default 200), `SESSIONS_REPLICATION_MAX_FLUSHES` (1–64, default 4),
/// `SESSIONS_REPLICATION_LOCK_TTL_SECONDS` (2–300, default 6).
struct ReplicatorConfiguration: Sendable {
    var common: CommonConfiguration
    var databaseURL: String
    var redisURL: String
    var clickhouseURL: String
    var clickhouseDatabase: String
    var replication: SessionReplicator.Settings

    init(environment: Environment) throws {
        common = try CommonConfiguration(environment: environment, defaultPort: 3004)
        databaseURL = environment.databaseURL
        redisURL = environment.redisURL
        clickhouseURL = environment.clickhouseURL
        clickhouseDatabase = environment.clickhouseDatabase
        func name(_ key: String, default fallback: String) throws -> String {
            let value = environment[key] ?? fallback
            guard !value.isEmpty, value.count <= 63,
                value.utf8.allSatisfy({ (97...122).contains($0) || (48...57).contains($0) || $0 == 95 })
            else { throw ConfigurationError(key: key, message: "must be 1-63 characters of a-z, 0-9 and _") }
            return value
        }
        replication = SessionReplicator.Settings(
            databaseURL: databaseURL,
            slot: try name("SESSIONS_REPLICATION_SLOT", default: "sessions_to_clickhouse_v1"),
            publication: try name("SESSIONS_REPLICATION_PUBLICATION", default: "sessions_to_clickhouse_v1_publication"),
            batchSize: try environment.integer("SESSIONS_REPLICATION_BATCH_SIZE", default: 1000, in: 1...100_000),
            flushInterval: .milliseconds(
                try environment.integer("SESSIONS_REPLICATION_FLUSH_MS", default: 200, in: 10...60_000)
            ),
            maxConcurrentFlushes: try environment.integer("SESSIONS_REPLICATION_MAX_FLUSHES", default: 4, in: 1...64),
            lockTTL: .seconds(try environment.integer("SESSIONS_REPLICATION_LOCK_TTL_SECONDS", default: 6, in: 2...300))
        )
    }
}
