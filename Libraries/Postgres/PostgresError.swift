import Contracts

/// An error from PostgreSQL or from libpq.
///
/// `sqlState` keeps the server's SQLSTATE when there is one (`23505` unique violation, …) and
/// ``isRetriable`` tells whether trying again (on a new connection) can help.
public struct PostgresError: RetriableError, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String {
            case connectionFailed, queryFailed, unexpectedResult, decodingFailed, replicationFailed, invalidArgument
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// Could not connect, or the connection broke.
        public static let connectionFailed = Code(.connectionFailed)
        /// The server rejected a statement; see `sqlState`.
        public static let queryFailed = Code(.queryFailed)
        /// The server answered with a result of an unexpected shape.
        public static let unexpectedResult = Code(.unexpectedResult)
        /// A column value could not be read as the requested type.
        public static let decodingFailed = Code(.decodingFailed)
        /// The replication stream failed.
        public static let replicationFailed = Code(.replicationFailed)
        /// The caller passed a value the wrapper refuses (an unsafe identifier, …).
        public static let invalidArgument = Code(.invalidArgument)

        public var description: String { base.rawValue }
    }

    public var code: Code
    /// The SQLSTATE the server sent, if any.
    public var sqlState: String?
    public var message: String
    public var file: String
    public var line: Int

    public init(_ code: Code, sqlState: String? = nil, message: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.sqlState = sqlState
        self.message = message
        self.file = file
        self.line = line
    }

    /// True when the same work may succeed if tried again: connection loss, serialization
    /// failures, deadlocks, server shutdown or overload.
    public var isRetriable: Bool {
        if code == .connectionFailed || code == .replicationFailed { return true }
        guard let sqlState else { return false }
        return sqlState.hasPrefix("08") || sqlState.hasPrefix("53") || sqlState.hasPrefix("57P")
            || sqlState == "40001" || sqlState == Self.deadlockDetected
    }

    /// The SQLSTATE for a unique-constraint violation.
    public static let uniqueViolation = "23505"
    /// The SQLSTATE of a transaction PostgreSQL stopped to break a deadlock.
    public static let deadlockDetected = "40P01"
    /// The SQLSTATE of "cached plan must not change result type", among others.
    public static let featureNotSupported = "0A000"

    public var description: String {
        "PostgresError(\(code)\(sqlState.map { ", sqlState: \($0)" } ?? ""), \(message))"
    }
}

extension PostgresError: Equatable {
    public static func == (lhs: PostgresError, rhs: PostgresError) -> Bool {
        lhs.code == rhs.code && lhs.sqlState == rhs.sqlState
    }
}
