import ConnectionPool
import Logging

/// A pool of PostgreSQL connections.
///
///     let client = PostgresClient(configuration: .init(url: "postgresql://postgres@127.0.0.1/sessions"))
///     let rows = try await client.query("SELECT id FROM session WHERE id = \(id)")
public final class PostgresClient: Sendable {
    public struct Configuration: Sendable {
        /// A libpq connection string or URL (`postgresql://user@host:port/db`).
        public var url: String
        /// The most connections open at once. Default 8.
        public var poolSize: Int

        public init(url: String, poolSize: Int = 8) {
            self.url = url
            self.poolSize = poolSize
        }
    }

    public let configuration: Configuration
    private let pool: ConnectionPool<PostgresHandle>

    public init(configuration: Configuration) {
        self.configuration = configuration
        let url = configuration.url
        self.pool = ConnectionPool(size: configuration.poolSize) { try PostgresHandle(url: url) }
    }

    /// Leases one connection for several statements.
    public func withConnection<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await pool.withConnection { handle in
            try await body(PostgresConnection(handle: handle, pool: pool))
        }
    }

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    public func withTransaction<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await withConnection { connection in
            try await connection.query("BEGIN")
            let result: Result
            do {
                result = try await body(connection)
            } catch {
                _ = try? await connection.query("ROLLBACK")
                throw error
            }
            try await connection.query("COMMIT")
            return result
        }
    }

    /// Runs one statement on any pooled connection.
    @discardableResult
    public func query(_ query: PostgresQuery) async throws -> [PostgresRow] {
        try await withConnection { try await $0.query(query) }
    }

    /// Checks that the server answers; used by readiness probes.
    public func ping() async throws {
        try await query("SELECT 1")
    }

    /// Closes every connection. Call once, after the last query.
    public func close() async {
        await pool.close()
    }
}
