import Contracts
import Foundation
import Logging
import Nats

/// Publishes session lifecycle events to JetStream (`SESSION_EVENTS`, file storage), so other
/// services — realtime's session cache, a run engine — learn of creates, updates and closes.
struct SessionEvents: Sendable {
    let jetStream: JetStream
    let logger: Logger

    static let stream = StreamConfiguration(
        name: Subjects.sessionEventsStream,
        subjects: [Subjects.allSessionEvents],
        maxAge: .seconds(7 * 24 * 3600)
    )

    /// Creates the stream when missing.
    func prepare() async throws {
        try await jetStream.createOrUpdateStream(Self.stream)
    }

    /// Publishes after the database write committed. Retried briefly; the message id makes a
    /// retry that did reach the stream count once.
    func publish(_ kind: SessionEvent.Kind, _ session: SessionRecord) async {
        let subject = Subjects.sessionEvent(environmentId: session.environmentId, kind: kind)
        let messageID = "\(session.id):\(kind.rawValue):\(Int(session.updatedAt.timeIntervalSince1970 * 1000))"
        for attempt in 1...3 {
            do {
                let payload = try JSONEncoder.sessions.encode(SessionEvent(kind: kind, session: session))
                _ = try await jetStream.publish(subject, payload: payload, messageID: messageID)
                return
            } catch {
                logger.warning(
                    "Could not publish a session event.",
                    metadata: [
                        "session.id": "\(session.friendlyId)", "event": "\(kind.rawValue)", "attempt": "\(attempt)",
                        "error": "\(error)",
                    ]
                )
                try? await Task.sleep(for: .milliseconds(100 * attempt))
            }
        }
        logger.error(
            "Gave up publishing a session event.",
            metadata: ["session.id": "\(session.friendlyId)", "event": "\(kind.rawValue)"]
        )
    }
}
