internal import CLibPQ
import ConnectionPool
import Foundation
import Synchronization

/// One libpq connection (`PGconn`).
///
/// `@unchecked Sendable`: a `PGconn` must not be used from two threads at once. The pool leases it
/// to one task at a time and that task runs each call on the pool's threads, one call at a time.
final class PostgresHandle: PooledConnection, @unchecked Sendable {
    private let connection: OpaquePointer
    /// The server's key for stopping this connection's statement; `PQcancel` may use it from any thread.
    private let canceller: OpaquePointer?
    private let wasCancelled = Atomic<Bool>(false)
    /// While a statement runs on the server: only then is there anything to cancel.
    private let isRunning = Atomic<Bool>(false)

    /// Connects (blocking) and sets the session defaults the decoders rely on.
    init(url: String) throws {
        guard let connection = PQconnectdb(url) else {
            throw PostgresError(.connectionFailed, message: "libpq could not allocate a connection")
        }
        self.connection = connection
        guard PQstatus(connection) == CONNECTION_OK else {
            self.canceller = nil
            throw PostgresError(.connectionFailed, message: Self.lastError(connection))
        }
        self.canceller = PQgetCancel(connection)
        // Notices (`… already exists, skipping`) would reach stderr raw, beside the logs; warnings
        // and errors still do.
        try execute(script: "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET client_min_messages = warning")
    }

    deinit {
        if let canceller { PQfreeCancel(canceller) }
        PQfinish(connection)
    }

    /// Not leased again: a connection whose statement was cancelled (the cancel request travels
    /// apart from the connection and could stop the next lessee's statement), and one left inside
    /// a transaction (a cancelled task's ROLLBACK does not run).
    var isBroken: Bool {
        wasCancelled.load(ordering: .relaxed) || PQstatus(connection) != CONNECTION_OK
            || PQtransactionStatus(connection) != PQTRANS_IDLE
    }

    /// Runs one blocking libpq call that sends a statement, marked as running meanwhile.
    private func running<Result>(_ call: () throws -> Result) rethrows -> Result {
        isRunning.store(true, ordering: .relaxed)
        defer { isRunning.store(false, ordering: .relaxed) }
        return try call()
    }

    /// Asks the server to stop the statement running now, if one is (callable from any thread;
    /// the request itself is sent from another thread, as it opens a connection). The statement
    /// fails with SQLSTATE 57014 and its transaction is rolled back.
    func cancel() {
        guard isRunning.load(ordering: .relaxed), canceller != nil else { return }
        wasCancelled.store(true, ordering: .relaxed)
        // The closure holds the handle, so its canceller lives until the request is sent.
        DispatchQueue.global().async { [self] in
            var message = [CChar](repeating: 0, count: 256)
            _ = PQcancel(self.canceller, &message, Int32(message.count))
        }
    }

    /// Statement names by SQL text: each statement is parsed and planned once per connection,
    /// not on every call (parsing a CTE cost PostgreSQL more than running it).
    private var prepared: [String: String] = [:]
    private var preparedCount = 0
    /// Statements past this many run unprepared, so SQL built from varying text (identifiers)
    /// cannot grow the cache without bound.
    static let preparedLimit = 256

    /// Runs a parameterised statement with the extended protocol (blocking), prepared on first use.
    func execute(_ query: PostgresQuery) throws -> [PostgresRow] {
        let parameters = query.parameters.map { $0.flatMap { strdup($0) } }
        defer { parameters.forEach { free($0) } }
        let values = parameters.map { UnsafePointer<CChar>($0) }
        return try values.withUnsafeBufferPointer { buffer in
            let count = Int32(buffer.count)
            guard let name = try statement(for: query.sql, parameterCount: count) else {
                return try rows(
                    of: running { PQexecParams(connection, query.sql, count, nil, buffer.baseAddress, nil, nil, 0) }
                )
            }
            func run(_ name: String) throws -> [PostgresRow] {
                try rows(of: running { PQexecPrepared(connection, name, count, buffer.baseAddress, nil, nil, 0) })
            }
            do {
                return try run(name)
            } catch let error as PostgresError where error.sqlState == PostgresError.featureNotSupported {
                // "cached plan must not change result type": a table changed under the statement
                // (a migration ran). Prepare it again, and retry unless a transaction was aborted.
                prepared[query.sql] = nil
                guard PQtransactionStatus(connection) == PQTRANS_IDLE,
                    let name = try statement(for: query.sql, parameterCount: count)
                else { throw error }
                return try run(name)
            }
        }
    }

    /// The prepared statement for `sql`, preparing it now if needed; nil when the cache is full.
    private func statement(for sql: String, parameterCount: Int32) throws -> String? {
        if let name = prepared[sql] { return name }
        guard prepared.count < Self.preparedLimit else { return nil }
        preparedCount += 1
        let name = "s\(preparedCount)"
        _ = try rows(of: PQprepare(connection, name, sql, parameterCount, nil))
        prepared[sql] = name
        return name
    }

    /// Runs one or more statements with the simple protocol (blocking). Used for migrations and
    /// session settings, whose SQL is fixed in the code.
    func execute(script: String) throws {
        _ = try rows(of: PQexec(connection, script))
    }

    private func rows(of result: OpaquePointer?) throws -> [PostgresRow] {
        guard let result else {
            throw PostgresError(.connectionFailed, message: Self.lastError(connection))
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return []
        case PGRES_TUPLES_OK:
            let columnCount = PQnfields(result)
            let columns = (0..<columnCount).map { String(cString: PQfname(result, $0)) }
            return (0..<PQntuples(result)).map { row in
                let values = (0..<columnCount).map { column -> String? in
                    PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column))
                }
                return PostgresRow(columns: columns, values: values)
            }
        default:
            throw Self.error(from: result, connection: connection)
        }
    }

    static func error(from result: OpaquePointer, connection: OpaquePointer) -> PostgresError {
        let sqlState = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
        let message = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
        if PQstatus(connection) != CONNECTION_OK {
            return PostgresError(.connectionFailed, sqlState: sqlState, message: message ?? lastError(connection))
        }
        return PostgresError(.queryFailed, sqlState: sqlState, message: message ?? lastError(connection))
    }

    static func lastError(_ connection: OpaquePointer) -> String {
        String(cString: PQerrorMessage(connection)).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// A leased connection: statements run one after another on the same server session, which is
/// what transactions need. Valid only inside the closure that received it.
public struct PostgresConnection: Sendable {
    let handle: PostgresHandle
    let pool: ConnectionPool<PostgresHandle>

    /// Runs a parameterised statement and returns its rows. Cancelling the task stops the
    /// statement on the server (a slot creation waiting for old transactions, a stuck lock).
    @discardableResult
    public func query(_ query: PostgresQuery) async throws -> [PostgresRow] {
        let handle = self.handle
        return try await withTaskCancellationHandler {
            try await pool.runBlocking { try handle.execute(query) }
        } onCancel: {
            handle.cancel()
        }
    }

    func execute(script: String) async throws {
        let handle = self.handle
        try await pool.runBlocking { try handle.execute(script: script) }
    }
}
