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
/// - `SESSIONS_STREAM_STORE`: `jetstream` (default) or `s2`.
/// - `SESSIONS_S2_BASIN`: the basin (default `sessions`).
/// - With `s2`: `SESSIONS_S2_ENDPOINT` (required: the basin's data plane up to `/v1`, e.g.
///   `https://{basin}.b.s2.dev/v1`), `SESSIONS_S2_ACCESS_TOKEN` (required),
///   `SESSIONS_S2_ACCOUNT_ENDPOINT` (default `https://aws.s2.dev/v1`), `SESSIONS_S2_STREAM_PREFIX`
///   (default empty), `SESSIONS_S2_SKIP_ACCESS_TOKENS` (`true` hands writers the root token, for
///   s2-lite; default `false`), `SESSIONS_S2_RETENTION_SECONDS` (how long the streams realtime
///   makes keep records; default 0, for ever).
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
    /// Set when S2 is the store.
    var s2: S2Configuration?

    struct S2Configuration: Sendable {
        var endpoint: String
        var accountEndpoint: String
        var accessToken: String
        var streamPrefix: String
        var skipAccessTokens: Bool
        /// Nil: for ever.
        var retentionSeconds: Int?
    }

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
        switch try environment.oneOf("SESSIONS_STREAM_STORE", default: "jetstream", ["jetstream", "s2"]) {
        case "s2":
            func required(_ key: String) throws -> String {
                guard let value = environment[key] else {
                    throw ConfigurationError(key: key, message: "is required when SESSIONS_STREAM_STORE=s2")
                }
                return value
            }
            let retention = try environment.integer(
                "SESSIONS_S2_RETENTION_SECONDS",
                default: 0,
                in: 0...(100 * 365 * 86_400)
            )
            s2 = S2Configuration(
                endpoint: try required("SESSIONS_S2_ENDPOINT"),
                accountEndpoint: environment["SESSIONS_S2_ACCOUNT_ENDPOINT"] ?? "https://aws.s2.dev/v1",
                accessToken: try required("SESSIONS_S2_ACCESS_TOKEN"),
                streamPrefix: environment["SESSIONS_S2_STREAM_PREFIX"] ?? "",
                skipAccessTokens: try environment.oneOf(
                    "SESSIONS_S2_SKIP_ACCESS_TOKENS",
                    default: "false",
                    ["true", "false"]
                )
                    == "true",
                retentionSeconds: retention == 0 ? nil : retention
            )
        default:
            s2 = nil
        }
    }
}
