import Contracts
import Foundation
import HTTPTypes
import Hummingbird
import Nats
import Synchronization

/// Turns a bearer token into the environment and scopes it stands for.
public protocol Authenticator: Sendable {
    /// - Throws: ``APIError`` 401 for a missing, unknown, invalid or expired credential.
    func authenticate(token: String) async throws -> Principal
}

/// Authenticates every request of the routes it is added to; a request without valid
/// credentials gets 401 before anything else happens.
public struct AuthenticationMiddleware: RouterMiddleware {
    public typealias Context = APIRequestContext

    let authenticator: any Authenticator

    public init(_ authenticator: any Authenticator) { self.authenticator = authenticator }

    public func handle(
        _ request: Request,
        context: APIRequestContext,
        next: (Request, APIRequestContext) async throws -> Response
    ) async throws -> Response {
        guard let token = request.bearerToken else { throw APIError(.unauthorized, "Invalid or Missing API key") }
        var context = context
        context.principal = try await authenticator.authenticate(token: token)
        return try await next(request, context)
    }
}

extension Request {
    /// The credential of `Authorization: Bearer <token>` (the scheme in any case), or nil.
    public var bearerToken: String? {
        guard let header = headers[.authorization], header.prefix(7).lowercased() == "bearer " else { return nil }
        // Trimmed by hand: Foundation's CharacterSet trimming was a few percent of an append's CPU.
        let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        var token = header.dropFirst(7).drop(while: isBlank)
        while let last = token.last, isBlank(last) { token = token.dropLast() }
        return token.isEmpty ? nil : String(token)
    }
}

/// Authenticates through the control plane's `auth.authenticate` endpoint, remembering answers
/// for a short time (never past a token's expiry), so services other than the control plane
/// never read its tables.
public final class NatsAuthenticator: Authenticator {
    private struct Entry {
        var principal: Principal
        var validUntil: Date
    }

    private let connection: NatsConnection
    private let cacheLifetime: TimeInterval
    private let maxEntries: Int
    private let cache = Mutex<[String: Entry]>([:])

    /// - Parameters:
    ///   - cacheLifetime: how long an answer is reused. Default 5 s.
    ///   - maxEntries: cache size; the cache is emptied when full. Default 10,000.
    public init(connection: NatsConnection, cacheLifetime: Duration = .seconds(5), maxEntries: Int = 10_000) {
        self.connection = connection
        self.cacheLifetime = Double(cacheLifetime.components.seconds)
        self.maxEntries = maxEntries
    }

    public func authenticate(token: String) async throws -> Principal {
        let now = Date()
        if let entry = cache.withLock({ $0[token] }), entry.validUntil > now { return entry.principal }
        let principal: Principal
        do {
            let reply = try await connection.serviceRequest(
                Subjects.authenticate,
                payload: try JSONEncoder.sessions.encode(AuthenticateRequest(token: token)),
                timeout: .seconds(2)
            )
            principal = try JSONDecoder.sessions.decode(Principal.self, from: reply)
        } catch let error as NatsServiceError where error.code == .unauthorized {
            throw APIError(.unauthorized, error.message)
        } catch is NatsError, is NatsServiceError, is DecodingError {
            // The control plane is unreachable, or could not answer (its database restarting).
            throw APIError(.unavailable, "Authentication is unavailable; try again")
        }
        let validUntil = min(now.addingTimeInterval(cacheLifetime), principal.expiresAt ?? .distantFuture)
        cache.withLock { cache in
            if cache.count >= maxEntries { cache.removeAll() }
            cache[token] = Entry(principal: principal, validUntil: validUntil)
        }
        return principal
    }
}
