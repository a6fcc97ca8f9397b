import Contracts

/// An error from Redis or from hiredis. `hiredisCode` keeps hiredis' `err` value when the error
/// came from the client library (`REDIS_ERR_IO` = 1, `REDIS_ERR_EOF` = 3, …).
public struct RedisError: RetriableError, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String { case connectionFailed, serverError, transactionAborted, unexpectedReply }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// Could not connect, or the connection broke (I/O, EOF, protocol error).
        public static let connectionFailed = Code(.connectionFailed)
        /// Redis answered with an error reply (`ERR …`, `WRONGTYPE …`, `NOSCRIPT …`).
        public static let serverError = Code(.serverError)
        /// `EXEC` discarded the transaction (`EXECABORT`, or a watched key changed).
        public static let transactionAborted = Code(.transactionAborted)
        /// The reply did not have the expected shape.
        public static let unexpectedReply = Code(.unexpectedReply)

        public var description: String { base.rawValue }
    }

    public var code: Code
    public var hiredisCode: Int32?
    public var message: String

    public init(_ code: Code, hiredisCode: Int32? = nil, message: String) {
        self.code = code
        self.hiredisCode = hiredisCode
        self.message = message
    }

    /// True when trying again can help: the connection failed (a new one is opened), or Redis is
    /// loading, busy or a replica that is read-only for now.
    public var isRetriable: Bool {
        switch code {
        case .connectionFailed: true
        case .serverError: ["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN"].contains { message.hasPrefix($0) }
        default: false
        }
    }

    public var description: String { "RedisError(\(code), \(message))" }
}
