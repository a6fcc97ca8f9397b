import Contracts
import Foundation
import Nats

extension NatsConnection {
    /// Asks the control plane for the session named `session` (friendlyId or externalId) in an
    /// environment (`sessions.resolve`); nil when there is none.
    ///
    /// - Throws: ``APIError`` 503 when the control plane does not answer.
    public func resolveSession(_ session: String, environmentId: String) async throws -> SessionRecord? {
        do {
            let reply = try await serviceRequest(
                Subjects.resolveSession,
                payload: try JSONEncoder.sessions.encode(
                    ResolveSessionRequest(environmentId: environmentId, session: session)
                ),
                timeout: .seconds(2)
            )
            return try JSONDecoder.sessions.decode(SessionRecord.self, from: reply)
        } catch let error as NatsServiceError where error.code == .notFound {
            return nil
        } catch is NatsError, is NatsServiceError, is DecodingError {
            throw APIError(.unavailable, "Sessions are unavailable; try again")
        }
    }
}
