import ServiceKit

/// Configuration of the waitpoints service, read once in `main`.
///
/// Keys: the common ones (see `CommonConfiguration`; HTTP port default 3003),
/// `SESSIONS_DATABASE_URL` (default `postgresql://postgres@127.0.0.1:5432/sessions`),
/// `SESSIONS_DATABASE_POOL_SIZE` (default 8), `SESSIONS_REDIS_URL` (default `redis://127.0.0.1:6379`),
/// `SESSIONS_WAITPOINT_SWEEP_MS` (how often timeouts are swept, 50–60000, default 500),
/// `SESSIONS_WAITPOINT_CONSUMER` (the durable JetStream consumer of appended records that all
/// instances share, default `waitpoints`).
struct WaitpointsConfiguration: Sendable {
    var common: CommonConfiguration
    var databaseURL: String
    var databasePoolSize: Int
    var redisURL: String
    var sweepInterval: Duration
    var consumerName: String

    init(environment: Environment) throws {
        common = try CommonConfiguration(environment: environment, defaultPort: 3003)
        databaseURL = environment.databaseURL
        databasePoolSize = try environment.databasePoolSize()
        redisURL = environment.redisURL
        consumerName = environment["SESSIONS_WAITPOINT_CONSUMER"] ?? "waitpoints"
        guard consumerName.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            throw ConfigurationError(
                key: "SESSIONS_WAITPOINT_CONSUMER",
                message: "may hold only letters, digits, - and _"
            )
        }
        sweepInterval = .milliseconds(
            try environment.integer("SESSIONS_WAITPOINT_SWEEP_MS", default: 500, in: 50...60_000)
        )
    }
}
