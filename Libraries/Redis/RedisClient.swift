import ConnectionPool
import Foundation
import Synchronization

/// A pool of Redis connections.
///
///     let redis = try RedisClient(configuration: .init(url: "redis://127.0.0.1:6379"))
///     try await redis.command("SADD", "key", "member")
public final class RedisClient: Sendable {
    public struct Configuration: Sendable {
        /// `redis://host:port[/database]`.
        public var url: String
        /// The most connections open at once. Default 8.
        public var poolSize: Int
        /// Connect and command timeout. Default 5 s.
        public var timeout: Duration

        public init(url: String, poolSize: Int = 8, timeout: Duration = .seconds(5)) {
            self.url = url
            self.poolSize = poolSize
            self.timeout = timeout
        }
    }

    private let pool: ConnectionPool<RedisHandle>
    /// SHA1 of each script Redis has loaded, filled by `SCRIPT LOAD`.
    private let scriptHashes = Mutex<[RedisScript: String]>([:])

    /// - Throws: `RedisError.Code.connectionFailed` when the URL is not a `redis://` URL.
    public init(configuration: Configuration) throws {
        guard let url = URL(string: configuration.url), url.scheme == "redis", let host = url.host else {
            // Not the URL itself: it may hold a password.
            throw RedisError(.connectionFailed, message: "The Redis URL is not a redis://host:port URL")
        }
        let port = url.port ?? 6379
        let database = Int(url.path.dropFirst()) ?? 0
        let timeout = configuration.timeout
        // `redis://:password@host` or `redis://user:password@host` (Redis 6 ACL users); both
        // percent-encoded as written.
        let components = URLComponents(url: url, resolvingAgainstBaseURL: false)
        let password = components?.percentEncodedPassword.flatMap { $0.isEmpty ? nil : $0.removingPercentEncoding }
        let user = components?.percentEncodedUser.flatMap { $0.isEmpty ? nil : $0.removingPercentEncoding }
        guard user == nil || password != nil else {
            throw RedisError(.connectionFailed, message: "The Redis URL names a user but no password")
        }
        self.pool = ConnectionPool(size: configuration.poolSize) {
            try RedisHandle(
                host: host,
                port: port,
                user: user,
                password: password,
                database: database,
                timeout: timeout
            )
        }
    }

    /// Runs one command. An error reply throws `RedisError.Code.serverError`.
    @discardableResult
    public func command(_ arguments: String...) async throws -> RedisValue {
        try await command(arguments)
    }

    /// Runs one command given as an argument list.
    @discardableResult
    public func command(_ arguments: [String]) async throws -> RedisValue {
        let reply = try await withHandle { handle in try handle.command(arguments) }
        if case .error(let message) = reply { throw RedisError(.serverError, message: message) }
        return reply
    }

    /// Runs the commands atomically with `MULTI`/`EXEC` and returns one reply per command (a
    /// command that failed while running gives an `.error` value in its place).
    public func transaction(_ commands: [[String]]) async throws -> [RedisValue] {
        let replies = try await withHandle { handle in try handle.pipeline([["MULTI"]] + commands + [["EXEC"]]) }
        switch replies.last {
        case .array(let results): return results
        case .error(let message): throw RedisError(.transactionAborted, message: message)
        case .null: throw RedisError(.transactionAborted, message: "a watched key changed")
        default: throw RedisError(.unexpectedReply, message: "EXEC did not answer with an array")
        }
    }

    /// Runs a Lua script with `EVALSHA`, loading it first when Redis does not have it.
    @discardableResult
    public func evaluate(_ script: RedisScript, keys: [String], arguments: [String] = []) async throws -> RedisValue {
        let hash: String
        if let known = scriptHashes.withLock({ $0[script] }) { hash = known } else { hash = try await load(script) }
        let call = { (hash: String) in ["EVALSHA", hash, String(keys.count)] + keys + arguments }
        do {
            return try await command(call(hash))
        } catch let error as RedisError where error.code == .serverError && error.message.hasPrefix("NOSCRIPT") {
            // Redis restarted or its scripts were flushed: load again and retry once.
            return try await command(call(try await load(script)))
        }
    }

    /// Checks that the server answers; used by readiness probes.
    public func ping() async throws {
        try await command("PING")
    }

    /// Closes every connection. Call once, after the last command.
    public func close() async {
        await pool.close()
    }

    private func load(_ script: RedisScript) async throws -> String {
        guard let hash = try await command("SCRIPT", "LOAD", script.source).string else {
            throw RedisError(.unexpectedReply, message: "SCRIPT LOAD did not answer with a hash")
        }
        scriptHashes.withLock { $0[script] = hash }
        return hash
    }

    private func withHandle<Result: Sendable>(
        _ work: @escaping @Sendable (RedisHandle) throws -> Result
    )
        async throws -> Result
    {
        try await pool.withConnection { handle in
            try await pool.runBlocking { try work(handle) }
        }
    }
}
