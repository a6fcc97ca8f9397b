import Contracts
import Foundation
import Logging
import Nats
import ServiceLifecycle

/// With the S2 store: when a session closes, revokes the S2 access tokens its direct writers
/// were given, so that no one appends to a closed session's streams behind realtime's back.
///
/// Reads the control plane's closed events durably (consumer `realtime-s2-tokens` on
/// `SESSION_EVENTS`, shared by every instance: each close is handled once, and a close made
/// while realtime was down is handled when it is back). A revocation that fails is tried again.
struct S2TokenRevoker: Service {
    let jetStream: JetStream
    let directWrites: S2DirectWrites
    let logger: Logger

    static let durableName = "realtime-s2-tokens"

    func run() async throws {
        await jetStream.consumeDurably(
            stream: Subjects.sessionEventsStream,
            durable: Self.durableName,
            filterSubject: Subjects.sessionEvent(environmentId: "*", kind: .closed),
            onlyNew: true,
            batch: 16,
            logger: logger
        ) { messages in
            for message in messages { await handle(message) }
        }
    }

    private func handle(_ message: AckableMessage) async {
        guard let event = try? JSONDecoder.sessions.decode(SessionEvent.self, from: message.message.payload) else {
            try? message.terminate()
            return
        }
        let session = event.session.friendlyId
        do {
            let revoked = try await directWrites.revoke(session: session)
            if revoked > 0 {
                logger.info(
                    "Revoked a closed session's S2 access tokens.",
                    metadata: ["session": "\(session)", "s2.tokens": "\(revoked)"]
                )
            }
            try message.ack()
        } catch {
            logger.warning(
                "Revoking a closed session's S2 access tokens failed; trying again.",
                metadata: ["session": "\(session)", "error": "\(error)"]
            )
            try? message.nak(delay: .seconds(5))
        }
    }
}
