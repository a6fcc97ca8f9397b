import Contracts
import Foundation

/// Header fields in order, looked up without regard to case.
public struct HTTPHeaders: Sendable, Equatable, ExpressibleByDictionaryLiteral, Sequence {
    public private(set) var fields: [(name: String, value: String)]

    public init(_ fields: [(name: String, value: String)] = []) { self.fields = fields }

    public init(dictionaryLiteral elements: (String, String)...) {
        self.fields = elements.map { (name: $0.0, value: $0.1) }
    }

    /// The first value of `name`, if any.
    public subscript(_ name: String) -> String? {
        fields.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }

    public mutating func add(_ name: String, _ value: String) {
        fields.append((name: name, value: value))
    }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { fields.makeIterator() }

    public static func == (lhs: HTTPHeaders, rhs: HTTPHeaders) -> Bool {
        lhs.fields.elementsEqual(rhs.fields) { $0.name == $1.name && $0.value == $1.value }
    }
}

/// A request for ``HTTPClient``.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: HTTPHeaders
    public var body: Data?
    /// The whole exchange must finish within this time (for a streamed response: until the
    /// response head arrives; the body may then take as long as it needs). Default 30 s.
    public var timeout: Duration
    /// Connecting must finish within this time. Default 5 s.
    public var connectTimeout: Duration

    public init(
        method: String = "GET",
        url: String,
        headers: HTTPHeaders = [:],
        body: Data? = nil,
        timeout: Duration = .seconds(30),
        connectTimeout: Duration = .seconds(5)
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.connectTimeout = connectTimeout
    }
}

/// A complete response.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: Data
    /// True when the request went over a connection kept open from an earlier request.
    public var connectionReused: Bool

    public init(status: Int, headers: HTTPHeaders, body: Data, connectionReused: Bool = false) {
        self.status = status
        self.headers = headers
        self.body = body
        self.connectionReused = connectionReused
    }
}

/// A response whose body arrives in chunks as the server sends it (SSE, long reads).
public struct HTTPStreamingResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    /// The body chunks; ends when the server ends the response. Cancelling the consuming task (or
    /// dropping the iterator) aborts the transfer.
    public var body: AsyncThrowingStream<Data, any Error>
}

/// An error from libcurl. `curlCode` keeps the `CURLcode`.
public struct HTTPClientError: RetriableError, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String { case connectionFailed, timeout, transferFailed, invalidRequest, cancelled }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The server could not be reached.
        public static let connectionFailed = Code(.connectionFailed)
        /// The request took longer than its timeout.
        public static let timeout = Code(.timeout)
        /// The connection failed during the exchange.
        public static let transferFailed = Code(.transferFailed)
        /// libcurl refused the request (bad URL, unsupported option).
        public static let invalidRequest = Code(.invalidRequest)
        /// The caller stopped reading a streamed body.
        public static let cancelled = Code(.cancelled)

        public var description: String { base.rawValue }
    }

    public var code: Code
    public var curlCode: Int32
    public var message: String

    public init(_ code: Code, curlCode: Int32, message: String) {
        self.code = code
        self.curlCode = curlCode
        self.message = message
    }

    /// True when the same request may succeed if sent again (the server was unreachable, the
    /// connection broke, or it timed out). Whether a retry is safe is the caller's call.
    public var isRetriable: Bool { code == .connectionFailed || code == .timeout || code == .transferFailed }

    public var description: String { "HTTPClientError(\(code), curl \(curlCode): \(message))" }
}
