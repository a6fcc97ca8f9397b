import ServiceKit

/// Configuration of the control plane, read once in `main`.
///
/// Keys: the common ones (see `CommonConfiguration`; HTTP port default 3001),
/// `SESSIONS_DATABASE_URL` (default `postgresql://postgres@127.0.0.1:5432/sessions`),
/// `SESSIONS_DATABASE_POOL_SIZE` (default 8), `SESSIONS_CLICKHOUSE_URL` (default `http://127.0.0.1:8123`),
/// `SESSIONS_CLICKHOUSE_DATABASE` (default `default`; where the replicator keeps `sessions_v1`),
/// `SESSIONS_JWT_ISSUER` (default `https://id.trigger.dev`), `SESSIONS_JWT_AUDIENCE` (default
/// `https://api.trigger.dev`), `SESSIONS_ADMIN_TOKEN` (no default: the admin API answers 403 until it
/// is set; at least 16 characters).
struct ControlPlaneConfiguration: Sendable {
    var common: CommonConfiguration
    var databaseURL: String
    var databasePoolSize: Int
    var clickhouseURL: String
    var clickhouseDatabase: String
    var tokens: AccessTokenSettings
    var adminToken: String?

    init(environment: Environment) throws {
        common = try CommonConfiguration(environment: environment, defaultPort: 3001)
        databaseURL = environment.databaseURL
        databasePoolSize = try environment.databasePoolSize()
        clickhouseURL = environment.clickhouseURL
        clickhouseDatabase = environment.clickhouseDatabase
        let defaults = AccessTokenSettings()
        tokens = AccessTokenSettings(
            issuer: environment["SESSIONS_JWT_ISSUER"] ?? defaults.issuer,
            audience: environment["SESSIONS_JWT_AUDIENCE"] ?? defaults.audience
        )
        adminToken = environment["SESSIONS_ADMIN_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        if let adminToken, adminToken.count < 16 {
            throw ConfigurationError(key: "SESSIONS_ADMIN_TOKEN", message: "must be at least 16 characters")
        }
    }
}
