import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// Gives every request an id — the caller's `X-Request-Id` when it is a sane token, a new one
/// otherwise — puts it in the request's log metadata and echoes it on every response, errors
/// included.
public struct RequestIDMiddleware<Context: RequestContext>: RouterMiddleware {
    public init() {}

    public func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    )
        async throws -> Response
    {
        let id = request.headers[.requestID].flatMap(Self.accept) ?? UUID().uuidString.lowercased()
        var context = context
        context.logger[metadataKey: "request.id"] = "\(id)"
        do {
            var response = try await next(request, context)
            response.headers[.requestID] = id
            return response
        } catch let error as any HTTPResponseError {
            var response = try error.response(from: request, context: context)
            response.headers[.requestID] = id
            return response
        }
    }

    private static func accept(_ candidate: String) -> String? {
        let allowed = candidate.utf8.allSatisfy { $0 > 32 && $0 < 127 }
        return allowed && (1...128).contains(candidate.utf8.count) ? candidate : nil
    }
}

extension HTTPField.Name {
    public static let requestID = HTTPField.Name("X-Request-Id")!
}
