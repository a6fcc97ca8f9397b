import Foundation

/// Settings every service has, read from `SESSIONS_…` environment variables in `main`.
///
/// Keys: `SESSIONS_HTTP_HOST` (default `127.0.0.1`), `SESSIONS_HTTP_PORT` (default: the
/// service's own), `SESSIONS_NATS_URL` (default `nats://127.0.0.1:4222`), `SESSIONS_PUBLIC_URL`
/// (default `http://127.0.0.1:8080`), `SESSIONS_LOG_LEVEL` (default `info`),
/// `SESSIONS_SHUTDOWN_TIMEOUT_SECONDS` (default 10), `SESSIONS_HTTP_IDLE_TIMEOUT_SECONDS` (default
/// 60: a connection that sends nothing that long, between requests or inside one, is closed, and
/// so is one that reads none of its answer that long),
/// `SESSIONS_PARENT_PID` (optional: shut down gracefully once the parent with that pid is gone).
public struct CommonConfiguration: Sendable {
    public var httpHost: String
    public var httpPort: Int
    public var natsURL: String
    public var publicURL: String
    public var logLevel: String
    public var shutdownTimeout: Duration
    public var httpIdleTimeoutSeconds: Int
    public var parentPID: pid_t?

    public init(environment: Environment, defaultPort: Int) throws {
        httpHost = environment["SESSIONS_HTTP_HOST"] ?? "127.0.0.1"
        httpPort = try environment.integer("SESSIONS_HTTP_PORT", default: defaultPort, in: 0...65535)
        natsURL = environment["SESSIONS_NATS_URL"] ?? "nats://127.0.0.1:4222"
        publicURL = environment["SESSIONS_PUBLIC_URL"] ?? "http://127.0.0.1:8080"
        logLevel = try environment.oneOf(
            "SESSIONS_LOG_LEVEL",
            default: "info",
            ["trace", "debug", "info", "notice", "warning", "error", "critical"]
        )
        shutdownTimeout = .seconds(
            try environment.integer("SESSIONS_SHUTDOWN_TIMEOUT_SECONDS", default: 10, in: 1...600)
        )
        httpIdleTimeoutSeconds = try environment.integer(
            "SESSIONS_HTTP_IDLE_TIMEOUT_SECONDS",
            default: 60,
            in: 1...3600
        )
        let parent = try environment.integer("SESSIONS_PARENT_PID", default: 0, in: 0...Int(Int32.max))
        parentPID = parent == 0 ? nil : pid_t(parent)
    }
}

/// The process environment, with typed readers that fail with a message naming the variable.
public struct Environment: Sendable {
    public var values: [String: String]

    public init(_ values: [String: String] = ProcessInfo.processInfo.environment) { self.values = values }

    public subscript(_ key: String) -> String? {
        values[key].flatMap { $0.isEmpty ? nil : $0 }
    }

    public func integer(_ key: String, default fallback: Int, in range: ClosedRange<Int>) throws -> Int {
        guard let text = self[key] else { return fallback }
        guard let value = Int(text), range.contains(value) else {
            throw ConfigurationError(
                key: key,
                message: "must be an integer in \(range.lowerBound)...\(range.upperBound)"
            )
        }
        return value
    }

    public func oneOf(_ key: String, default fallback: String, _ allowed: [String]) throws -> String {
        guard let text = self[key] else { return fallback }
        guard allowed.contains(text.lowercased()) else {
            throw ConfigurationError(key: key, message: "must be one of \(allowed.joined(separator: ", "))")
        }
        return text.lowercased()
    }
}

extension Environment {
    /// `SESSIONS_DATABASE_URL`, a libpq URL (default `postgresql://postgres@127.0.0.1:5432/sessions`).
    public var databaseURL: String {
        self["SESSIONS_DATABASE_URL"] ?? "postgresql://postgres@127.0.0.1:5432/sessions"
    }

    /// `SESSIONS_DATABASE_POOL_SIZE`: connections per pool, 1–256 (default 8).
    public func databasePoolSize() throws -> Int {
        try integer("SESSIONS_DATABASE_POOL_SIZE", default: 8, in: 1...256)
    }

    /// `SESSIONS_REDIS_URL`, `redis://host:port[/db]` (default `redis://127.0.0.1:6379`).
    public var redisURL: String { self["SESSIONS_REDIS_URL"] ?? "redis://127.0.0.1:6379" }

    /// `SESSIONS_CLICKHOUSE_URL`, the ClickHouse HTTP interface (default `http://127.0.0.1:8123`).
    public var clickhouseURL: String { self["SESSIONS_CLICKHOUSE_URL"] ?? "http://127.0.0.1:8123" }

    /// `SESSIONS_CLICKHOUSE_DATABASE`, where `sessions_v1` lives (default `default`).
    public var clickhouseDatabase: String { self["SESSIONS_CLICKHOUSE_DATABASE"] ?? "default" }
}

/// A configuration value that cannot be used.
public struct ConfigurationError: Error, CustomStringConvertible {
    public var key: String
    public var message: String

    public init(key: String, message: String) {
        self.key = key
        self.message = message
    }

    public var description: String { "\(key) \(message)" }
}

/// Loads a service's configuration in `main`; on a bad value it writes a message naming the
/// variable to stderr and exits with status 78 (`EX_CONFIG`) instead of crashing.
public func loadConfiguration<Configuration>(_ service: String, _ load: () throws -> Configuration) -> Configuration {
    do {
        return try load()
    } catch {
        FileHandle.standardError.write(Data("\(service): invalid configuration: \(error)\n".utf8))
        exit(78)
    }
}
