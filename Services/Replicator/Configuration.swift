import ServiceKit

/// Configuration of the replicator, read once in `main`.
///
/// Keys: the common ones (see `CommonConfiguration`; HTTP port default 3004),
/// `SESSIONS_DATABASE_URL` (default `postgresql://postgres@127.0.0.1:5432/sessions`),
/// `SESSIONS_REDIS_URL` (default `redis://127.0.0.1:6379`),
/// `SESSIONS_CLICKHOUSE_URL` (default `http://127.0.0.1:8123`).
struct ReplicatorConfiguration: Sendable {
    var common: CommonConfiguration
    var databaseURL: String
    var redisURL: String
    var clickhouseURL: String

    init(environment: Environment) throws {
        common = try CommonConfiguration(environment: environment, defaultPort: 3004)
        databaseURL = environment.databaseURL
        redisURL = environment.redisURL
        clickhouseURL = environment.clickhouseURL
    }
}
