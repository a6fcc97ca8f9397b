import Contracts
import Foundation
import Hummingbird
import Logging

/// The request context of every service: who is calling (after authentication). The request's
/// id is in the logger's metadata. JSON bodies use ISO-8601 dates with milliseconds.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The authenticated caller; set by ``AuthenticationMiddleware``.
    public var principal: Principal?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }

    public var requestDecoder: JSONDecoder { .sessions }
    public var responseEncoder: JSONEncoder { .sessions }

    /// The id in path parameter `name`, percent-decoded (`a%2Fb` names `a/b`).
    ///
    /// - Throws: 400 "Invalid {name} id" when it is empty or blank, longer than `maxLength` characters
    ///   once decoded, or not valid percent-encoded UTF-8.
    public func pathId(_ name: String, maxLength: Int = 256) throws -> String {
        guard let id = try parameters.require(name).removingPercentEncoding, (1...maxLength).contains(id.count),
            !id.allSatisfy(\.isWhitespace)
        else {
            throw APIError(.badRequest, "Invalid \(name) id")
        }
        return id
    }

    /// The caller, or 401 when the route was reached without authentication.
    public func requirePrincipal() throws -> Principal {
        guard let principal else { throw APIError(.unauthorized, "Invalid or Missing API key") }
        return principal
    }
}
