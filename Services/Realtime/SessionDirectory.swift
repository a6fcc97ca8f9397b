import Contracts
import Foundation
import Logging
import Nats
import ServiceKit
import ServiceLifecycle
import Synchronization

/// Sessions as the control plane knows them, asked over NATS (`sessions.resolve`).
///
/// Answers are reused for `lifetime` (100 ms by default, so a close takes effect for appends
/// within that even if its event is lost) and dropped at once when the control plane's session
/// events say the session changed. Runs as a service: it follows those events.
final class SessionDirectory: Service, Sendable {
    private struct Key: Hashable {
        var environmentId: String
        var session: String
    }

    private struct Entry {
        var session: SessionRecord
        var fetchedAt: ContinuousClock.Instant
    }

    private let connection: NatsConnection
    private let lifetime: Duration
    private let logger: Logger
    private let cache = Mutex<[Key: Entry]>([:])
    private let creations = Mutex<[Key: [UInt64: AsyncStream<Void>.Continuation]]>([:])
    private let lastWaiter = Atomic<UInt64>(0)

    init(connection: NatsConnection, lifetime: Duration = .milliseconds(100), logger: Logger) {
        self.connection = connection
        self.lifetime = lifetime
        self.logger = logger
    }

    /// The session named by `session` (friendlyId or externalId) in the environment, or nil.
    ///
    /// - Throws: ``APIError`` 503 when the control plane does not answer.
    func session(_ session: String, environmentId: String) async throws -> SessionRecord? {
        let key = Key(environmentId: environmentId, session: session)
        let now = ContinuousClock.now
        if let entry = cache.withLock({ $0[key] }), now - entry.fetchedAt < lifetime { return entry.session }
        guard let record = try await connection.resolveSession(session, environmentId: environmentId) else {
            return nil
        }
        cache.withLock { cache in
            if cache.count >= 100_000 { cache.removeAll() }
            cache[key] = Entry(session: record, fetchedAt: now)
        }
        return record
    }

    /// Like ``session(_:environmentId:)``, but waits up to `timeout` for the session to be
    /// created when it does not exist yet (subscribing by externalId before the task made it).
    func waitForSession(_ session: String, environmentId: String, timeout: Duration) async throws -> SessionRecord? {
        let deadline = ContinuousClock.now + timeout
        let key = Key(environmentId: environmentId, session: session)
        let (created, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = lastWaiter.add(1, ordering: .relaxed).newValue
        creations.withLock { $0[key, default: [:]][id] = continuation }
        defer { creations.withLock { $0[key]?[id] = nil } }
        while true {
            if let record = try await self.session(session, environmentId: environmentId) { return record }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero, !Task.isCancelled else { return nil }
            // Woken by the created event; the periodic look covers an event lost to a reconnect.
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await _ in created { return }
                }
                group.addTask { try? await Task.sleep(for: min(remaining, .seconds(1))) }
                await group.next()
                group.cancelAll()
            }
        }
    }

    func run() async throws {
        let events = try connection.subscribe(Subjects.allSessionEvents)
        let connectionEvents = connection.events
        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await message in events {
                        guard let event = try? JSONDecoder.sessions.decode(SessionEvent.self, from: message.payload)
                        else {
                            continue
                        }
                        self.changed(event.session)
                    }
                }
                group.addTask {
                    // Events published while disconnected are lost: forget everything.
                    for await event in connectionEvents where event == .reconnected {
                        self.cache.withLock { $0.removeAll() }
                    }
                }
                try await group.next()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            events.unsubscribe()
        }
    }

    private func changed(_ session: SessionRecord) {
        let keys = [session.friendlyId, session.externalId].compactMap { $0 }.map {
            Key(environmentId: session.environmentId, session: $0)
        }
        cache.withLock { cache in
            for key in keys { cache[key] = nil }
        }
        let waiting = creations.withLock { creations in keys.flatMap { creations[$0]?.values.map { $0 } ?? [] } }
        for waiter in waiting { waiter.yield() }
    }
}
