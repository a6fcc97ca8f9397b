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
///
/// A token in use never waits for its answer to be renewed: past half its lifetime, the answer
/// is still used and a new one is asked for in the background; a revoked key is refused once
/// that answer comes, and at the latest when the old one expires. Requests that find no answer
/// share one lookup per token, so a thousand clients reconnecting with one token make one
/// request to the control plane, not a thousand.
public final class NatsAuthenticator: Authenticator {
    private struct Entry {
        var principal: Principal
        var renewAfter: Date
        var validUntil: Date
    }

    private struct State {
        var answers: [String: Entry] = [:]
        /// Lookups under way, by token: the requests without an answer wait for these.
        var lookups: [String: Task<Principal, any Error>] = [:]
    }

    private let connection: NatsConnection
    private let cacheLifetime: TimeInterval
    private let maxEntries: Int
    private let state = Mutex(State())

    private let now: @Sendable () -> Date

    /// - Parameters:
    ///   - cacheLifetime: how long an answer is reused. Default 5 s.
    ///   - maxEntries: cache size; the cache is emptied when full. Default 10,000.
    ///   - now: the clock (tests set their own).
    public init(
        connection: NatsConnection,
        cacheLifetime: Duration = .seconds(5),
        maxEntries: Int = 10_000,
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.connection = connection
        self.now = now
        self.cacheLifetime = cacheLifetime / .seconds(1)
        self.maxEntries = maxEntries
    }

    public func authenticate(token: String) async throws -> Principal {
        let now = now()
        let answer = state.withLock { state -> Answer in
            let entry = state.answers[token].flatMap { $0.validUntil > now ? $0 : nil }
            if let entry, entry.renewAfter > now || state.lookups[token] != nil { return .cached(entry.principal) }
            let lookup = state.lookups[token] ?? Task { try await self.lookUp(token) }
            state.lookups[token] = lookup
            // A renewal runs on its own; a request without an answer waits for the lookup.
            return entry.map { .cached($0.principal) } ?? .lookup(lookup)
        }
        switch answer {
        case .cached(let principal): return principal
        case .lookup(let lookup): return try await lookup.value
        }
    }

    private enum Answer {
        case cached(Principal)
        case lookup(Task<Principal, any Error>)
    }

    /// Asks the control plane, then keeps the answer (or forgets a refused token) and ends the
    /// token's lookup.
    private func lookUp(_ token: String) async throws -> Principal {
        let asked = now()
        let outcome: Result<Principal, any Error>
        do { outcome = .success(try await ask(token)) } catch { outcome = .failure(error) }
        state.withLock { state in
            state.lookups[token] = nil
            switch outcome {
            case .success(let principal):
                if state.answers.count >= maxEntries { state.answers.removeAll() }
                state.answers[token] = Entry(
                    principal: principal,
                    renewAfter: asked.addingTimeInterval(cacheLifetime / 2),
                    validUntil: min(asked.addingTimeInterval(cacheLifetime), principal.expiresAt ?? .distantFuture)
                )
            case .failure(let error as APIError) where error.status == .unauthorized:
                state.answers[token] = nil
            case .failure:
                // The control plane did not answer: an answer still valid is kept until it expires.
                break
            }
        }
        return try outcome.get()
    }

    private func ask(_ token: String) async throws -> Principal {
        do {
            let reply = try await connection.serviceRequest(
                Subjects.authenticate,
                payload: try JSONEncoder.sessions.encode(AuthenticateRequest(token: token)),
                timeout: .seconds(2)
            )
            return try JSONDecoder.sessions.decode(Principal.self, from: reply)
        } catch let error as NatsServiceError where error.code == .unauthorized {
            throw APIError(.unauthorized, error.message)
        } catch is NatsError, is NatsServiceError, is DecodingError {
            // The control plane is unreachable, or could not answer (its database restarting).
            throw APIError(.unavailable, "Authentication is unavailable; try again")
        }
    }
}
