/// A stable, bounded error code shared by HTTP responses, NATS service errors and metric labels.
///
/// Unknown codes decode as themselves, so an older client keeps decoding a newer server's errors.
public struct ErrorCode: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: String

    public init(rawValue: String) { self.rawValue = rawValue }

    public static let badRequest = ErrorCode(rawValue: "bad_request")
    public static let unauthorized = ErrorCode(rawValue: "unauthorized")
    public static let forbidden = ErrorCode(rawValue: "forbidden")
    public static let notFound = ErrorCode(rawValue: "not_found")
    public static let methodNotAllowed = ErrorCode(rawValue: "method_not_allowed")
    public static let conflict = ErrorCode(rawValue: "conflict")
    public static let payloadTooLarge = ErrorCode(rawValue: "payload_too_large")
    public static let throttled = ErrorCode(rawValue: "throttled")
    public static let internalError = ErrorCode(rawValue: "internal")
    public static let unavailable = ErrorCode(rawValue: "unavailable")

    /// The HTTP status for this code; it is also the value of `Nats-Service-Error-Code`.
    public var status: Int {
        switch self {
        case .badRequest: 400
        case .unauthorized: 401
        case .forbidden: 403
        case .notFound: 404
        case .methodNotAllowed: 405
        case .conflict: 409
        case .payloadTooLarge: 413
        case .throttled: 429
        case .unavailable: 503
        default: 500
        }
    }

    /// The code for an HTTP-like status, used to read `Nats-Service-Error-Code` back.
    public init(status: Int) {
        self =
            switch status {
            case 400: .badRequest
            case 401: .unauthorized
            case 403: .forbidden
            case 404: .notFound
            case 405: .methodNotAllowed
            case 409: .conflict
            case 413: .payloadTooLarge
            case 429: .throttled
            case 503: .unavailable
            default: .internalError
            }
    }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }
}

/// The JSON body of every error response: `{"error": "<message>"}`.
public struct ErrorBody: Codable, Sendable, Equatable {
    public var error: String

    public init(error: String) { self.error = error }
}

/// An error from a dependency (a server or the network) that says whether trying again may
/// succeed. The HTTP layer answers a retriable one with 503 and `Retry-After` instead of a 500.
public protocol RetriableError: Error {
    var isRetriable: Bool { get }
}
