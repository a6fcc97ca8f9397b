import Contracts

/// An error from NATS, JetStream or cnats. `natsStatus` keeps cnats' status code when the error
/// came from the library; `jetStreamCode` keeps the server's JetStream `err_code` (10071 = wrong
/// last sequence, …).
public struct NatsError: RetriableError, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String {
            case connectionFailed, timeout, noResponders, notFound, jetStream, invalidArgument, closed, library
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// Could not connect, or the connection is not usable right now.
        public static let connectionFailed = Code(.connectionFailed)
        /// No reply arrived within the timeout.
        public static let timeout = Code(.timeout)
        /// Nobody subscribes to the subject.
        public static let noResponders = Code(.noResponders)
        /// JetStream has no such message, stream or consumer.
        public static let notFound = Code(.notFound)
        /// JetStream refused the request; see `jetStreamCode`.
        public static let jetStream = Code(.jetStream)
        /// The caller passed a value cnats or the server refuses.
        public static let invalidArgument = Code(.invalidArgument)
        /// The connection or subscription is closed.
        public static let closed = Code(.closed)
        /// Any other cnats failure; see `natsStatus`.
        public static let library = Code(.library)

        public var description: String { base.rawValue }
    }

    public var code: Code
    public var natsStatus: Int32?
    public var jetStreamCode: Int?
    public var message: String

    public init(_ code: Code, natsStatus: Int32? = nil, jetStreamCode: Int? = nil, message: String) {
        self.code = code
        self.natsStatus = natsStatus
        self.jetStreamCode = jetStreamCode
        self.message = message
    }

    /// JetStream's code for a publish whose expected last subject sequence did not match.
    public static let wrongLastSequence = 10071

    /// True when the same request may succeed later: timeouts, no responders (a service is
    /// restarting), connection trouble, JetStream temporarily unavailable.
    public var isRetriable: Bool {
        switch code {
        case .timeout, .noResponders, .connectionFailed: true
        case .jetStream: jetStreamCode == 10008 || jetStreamCode == 10023
        default: false
        }
    }

    public var description: String {
        var text = "NatsError(\(code)"
        if let natsStatus { text += ", status \(natsStatus)" }
        if let jetStreamCode { text += ", err_code \(jetStreamCode)" }
        return text + ", \(message))"
    }
}
