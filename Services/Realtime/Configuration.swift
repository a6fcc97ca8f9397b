import Foundation
import ServiceKit

/// Configuration of the realtime service, read once in `main`.
///
/// Keys: the common ones (see `CommonConfiguration`; HTTP port default 3002), and
/// - `SESSIONS_REALTIME_TOKEN_SECRET`: signs channel tokens for direct writers; every instance
///   needs the same one. Default: a random secret per process (tokens then work only on the
///   instance that issued them, which suits a single local instance).
/// - `SESSIONS_CHANNEL_TOKEN_SECONDS`: lifetime of a channel token, 60–604800 (default 86400).
/// - `SESSIONS_SSE_PING_SECONDS`: heartbeat interval of SSE streams, 1–300 (default 15).
/// - `SESSIONS_SSE_BUFFER_RECORDS`: records a subscriber may fall behind before it is
///   disconnected to resume, 16–1000000 (default 1000).
/// - `SESSIONS_S2_BASIN`: the basin name reported to direct writers (default `sessions`).
/// - `SESSIONS_S2_FLUSH_INTERVAL_MS` (default 100) and `SESSIONS_S2_MAX_RETRIES` (default 10):
///   passed to direct writers.
struct RealtimeConfiguration: Sendable {
    var common: CommonConfiguration
    var tokenSecret: String
    var isTokenSecretGenerated: Bool
    var channelTokenLifetime: Duration
    var pingInterval: Duration
    var subscriberBuffer: Int
    var basin: String
    var flushIntervalMilliseconds: Int
    var maxRetries: Int

    init(environment: Environment) throws {
        common = try CommonConfiguration(environment: environment, defaultPort: 3002)
        if let secret = environment["SESSIONS_REALTIME_TOKEN_SECRET"] {
            guard secret.utf8.count >= 32 else {
                throw ConfigurationError(key: "SESSIONS_REALTIME_TOKEN_SECRET", message: "must be at least 32 bytes")
            }
            tokenSecret = secret
            isTokenSecretGenerated = false
        } else {
            tokenSecret = Identifier.secret(length: 48)
            isTokenSecretGenerated = true
        }
        channelTokenLifetime = .seconds(
            try environment.integer("SESSIONS_CHANNEL_TOKEN_SECONDS", default: 86_400, in: 60...604_800)
        )
        pingInterval = .seconds(try environment.integer("SESSIONS_SSE_PING_SECONDS", default: 15, in: 1...300))
        subscriberBuffer = try environment.integer("SESSIONS_SSE_BUFFER_RECORDS", default: 1000, in: 16...1_000_000)
        basin = environment["SESSIONS_S2_BASIN"] ?? "sessions"
        flushIntervalMilliseconds = try environment.integer(
            "SESSIONS_S2_FLUSH_INTERVAL_MS",
            default: 100,
            in: 1...60_000
        )
        maxRetries = try environment.integer("SESSIONS_S2_MAX_RETRIES", default: 10, in: 0...1000)
    }
}
