import Contracts
import Foundation
import HTTPTypes
import Hummingbird

/// An error answered to the client as `{"error": message}` with its status. Messages are for
/// users: they name the problem and never carry internal detail.
public struct APIError: Error, HTTPResponseError, Sendable, Equatable {
    public var code: ErrorCode
    public var message: String
    public var headers: HTTPFields

    public init(_ code: ErrorCode, _ message: String, headers: HTTPFields = [:]) {
        self.code = code
        self.message = message
        self.headers = headers
    }

    public var status: HTTPResponse.Status { .init(code: code.status) }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        response()
    }

    func response() -> Response {
        var headers = self.headers
        headers[.contentType] = "application/json; charset=utf-8"
        let body = (try? JSONEncoder.sessions.encode(ErrorBody(error: message))) ?? Data(#"{"error":"error"}"#.utf8)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// The only text a 500 ever carries.
    public static let internalError = APIError(.internalError, "Internal Server Error")

    /// A server this service depends on is unreachable or overloaded.
    public static let unavailable = APIError(
        .unavailable,
        "Service temporarily unavailable; try again",
        headers: [.retryAfter: "1"]
    )
}

extension Response {
    /// A JSON response of `value`, encoded as the API encodes everything.
    public static func json(
        _ value: some Encodable,
        status: HTTPResponse.Status = .ok,
        headers: HTTPFields = [:]
    ) throws
        -> Response
    {
        var headers = headers
        headers[.contentType] = "application/json; charset=utf-8"
        return Response(
            status: status,
            headers: headers,
            body: .init(byteBuffer: ByteBuffer(bytes: try JSONEncoder.sessions.encode(value)))
        )
    }
}
