import Contracts
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Synchronization

/// The routes a service serves, filled once the router is complete. Used to answer CORS
/// preflights and to tell "wrong method" (405 with `Allow`) from "no such route" (404).
public final class RouteTable: Sendable {
    public struct Route: Sendable, Hashable {
        public var method: String
        /// OpenAPI style: `/api/v1/sessions/{session}`.
        public var path: String

        public init(method: String, path: String) {
            self.method = method
            self.path = path
        }
    }

    private let routes = Mutex<[Route]>([])

    public init() {}

    public var all: [Route] { routes.withLock { $0 } }

    public func set(_ newRoutes: [Route]) { routes.withLock { $0 = newRoutes } }

    /// The methods served at a concrete path, or nil when no route has that path.
    public func methods(for path: String) -> [String]? {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        let methods = all.filter { route in
            let pattern = route.path.split(separator: "/", omittingEmptySubsequences: true)
            return pattern.count == segments.count
                && zip(pattern, segments).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
        }.map(\.method)
        // The router answers HEAD wherever there is a GET (``ServiceHost``).
        let served = Set(methods).union(methods.contains("GET") ? ["HEAD"] : [])
        return served.isEmpty ? nil : served.sorted()
    }
}

/// The outermost middleware of every service:
/// - gives each request an id (the caller's `X-Request-Id` when sane) and echoes it;
/// - CORS: answers `OPTIONS` preflights for known paths and allows any origin on every response;
/// - turns errors into JSON responses: ``APIError`` as is, a wrong method into 405 with `Allow`,
///   a dependency that is down into 503 with `Retry-After`, anything unexpected into a bare 500
///   that is logged with the request id.
public struct APIMiddleware: RouterMiddleware {
    public typealias Context = APIRequestContext

    let routes: RouteTable
    let exposedHeaders: String

    public init(routes: RouteTable, exposedHeaders: [String] = []) {
        self.routes = routes
        self.exposedHeaders = (["X-Request-Id"] + exposedHeaders).joined(separator: ", ")
    }

    public func handle(
        _ request: Request,
        context: APIRequestContext,
        next: (Request, APIRequestContext) async throws -> Response
    ) async throws -> Response {
        let id = request.headers[.requestID].flatMap(Self.acceptRequestID) ?? Identifier.uuid()
        var context = context
        context.logger[metadataKey: "request.id"] = "\(id)"
        var response: Response
        if request.uri.description.range(of: "%00", options: .caseInsensitive) != nil {
            // Ids and filters end up in PostgreSQL, whose text cannot hold NUL.
            response = APIError(.badRequest, "The URL must not contain NUL characters (%00)").response()
        } else if request.method == .options, let methods = routes.methods(for: request.uri.path) {
            response = preflight(request, methods: methods)
        } else {
            do {
                response = try await next(request, context)
            } catch let error as APIError {
                response = error.response()
            } catch let error as any HTTPResponseError {
                response = publicResponse(for: error, request: request, context: context)
            } catch let error as any RetriableError where error.isRetriable {
                context.logger.warning("A dependency is unavailable.", metadata: ["error": "\(error)"])
                response = APIError.unavailable.response()
            } catch {
                context.logger.error("A request failed unexpectedly.", metadata: ["error": "\(error)"])
                response = APIError.internalError.response()
            }
        }
        response.headers[.requestID] = id
        response.headers[.accessControlAllowOrigin] = "*"
        response.headers[.accessControlExposeHeaders] = exposedHeaders
        return response
    }

    private func preflight(_ request: Request, methods: [String]) -> Response {
        var headers = HTTPFields()
        headers[.accessControlAllowMethods] = (methods + ["OPTIONS"]).joined(separator: ", ")
        headers[.accessControlAllowHeaders] =
            request.headers[.accessControlRequestHeaders]
            ?? "Authorization, Content-Type, Last-Event-ID, Timeout-Seconds, X-Part-Id, X-Request-Id"
        headers[.accessControlMaxAge] = "300"
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: "{}")))
    }

    /// Hummingbird's own errors (no route, body too large, …) with a message of ours.
    private func publicResponse(
        for error: any HTTPResponseError,
        request: Request,
        context: APIRequestContext
    ) -> Response {
        switch error.status {
        case .notFound:
            if let methods = routes.methods(for: request.uri.path), !methods.contains(request.method.rawValue) {
                var headers = HTTPFields()
                headers[.allow] = (methods + ["OPTIONS"]).joined(separator: ", ")
                return APIError(.methodNotAllowed, "Method not allowed", headers: headers).response()
            }
            return APIError(.notFound, "Not found").response()
        case .contentTooLarge:
            return APIError(.payloadTooLarge, "Request body too large").response()
        case let status where (400..<500).contains(status.code):
            return APIError(ErrorCode(status: status.code), status.reasonPhrase).response()
        default:
            context.logger.error("A request failed.", metadata: ["error": "\(error)"])
            return APIError.internalError.response()
        }
    }

    private static func acceptRequestID(_ candidate: String) -> String? {
        let printable = candidate.utf8.allSatisfy { $0 > 32 && $0 < 127 }
        return printable && (1...128).contains(candidate.utf8.count) ? candidate : nil
    }
}

extension HTTPField.Name {
    public static let requestID = HTTPField.Name("X-Request-Id")!
}
