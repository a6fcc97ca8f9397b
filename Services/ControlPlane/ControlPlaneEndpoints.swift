import Contracts
import Foundation
import Nats
import ServiceKit

/// The control plane's NATS endpoints, for the other services.
enum ControlPlaneEndpoints {
    static func make(store: SessionStore, authenticator: ControlPlaneAuthenticator) -> [NatsEndpoint] {
        [
            NatsEndpoint(name: "resolve-session", subject: Subjects.resolveSession) { message in
                let request = try decode(ResolveSessionRequest.self, message)
                guard let session = try await store.find(request.session, environmentId: request.environmentId) else {
                    throw NatsServiceError(.notFound, "Session not found")
                }
                return try JSONEncoder.sessions.encode(session)
            },
            NatsEndpoint(name: "authenticate", subject: Subjects.authenticate) { message in
                let request = try decode(AuthenticateRequest.self, message)
                do {
                    return try JSONEncoder.sessions.encode(try await authenticator.authenticate(token: request.token))
                } catch let error as APIError {
                    throw NatsServiceError(error.code, error.message)
                }
            },
        ]
    }

    private static func decode<Request: Decodable>(_ type: Request.Type, _ message: NatsMessage) throws -> Request {
        do {
            return try JSONDecoder.sessions.decode(type, from: message.payload)
        } catch {
            throw NatsServiceError(.badRequest, "Invalid \(Request.self) payload")
        }
    }
}
