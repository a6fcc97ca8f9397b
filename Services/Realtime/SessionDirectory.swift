import Contracts
import Foundation
import Logging
import Nats
import ServiceKit
import ServiceLifecycle
import Synchronization

/// Sessions as the control plane knows them, asked over NATS (`sessions.resolve`).
///
/// Answers are reused until the control plane says the session changed: at once on an update
/// or close (``SessionChange``, core NATS), and again with its durable event. `lifetime` (30 s)
/// only bounds how long a lost notice can matter; a reconnect forgets everything, since notices
/// sent meanwhile are lost. An answer that was on its way while its session changed is not kept.
/// Requests that find no answer share the lookup under way for that name (a thousand subscribers
/// reconnecting to one session ask the control plane once), unless the session changed since it
/// began. Runs as a service: it follows the notices and events.
final class SessionDirectory: Service, Sendable {
    /// Names compared byte for byte, as the control plane compares them: canonically
    /// equivalent externalIds are two sessions.
    private struct Key: Hashable {
        var environmentId: String
        var session: [UInt8]

        init(environmentId: String, session: String) {
            self.environmentId = environmentId
            self.session = Array(session.utf8)
        }
    }

    private enum Entry {
        case session(SessionRecord, fetchedAt: ContinuousClock.Instant)
        /// Changed at this instant: an answer asked for earlier is out of date.
        case changed(at: ContinuousClock.Instant)
    }

    private struct State {
        var entries: [Key: Entry] = [:]
        /// Lookups under way; a change drops its names' lookup, so later requests ask anew.
        var lookups: [Key: (id: UInt64, task: Task<SessionRecord?, any Error>)] = [:]
        var lastLookup: UInt64 = 0
    }

    private let connection: NatsConnection
    private let lifetime: Duration
    private let logger: Logger
    private let cache = Mutex(State())
    private let creations = Mutex<[Key: [UInt64: AsyncStream<Void>.Continuation]]>([:])
    private let lastWaiter = Atomic<UInt64>(0)

    /// How often a caller waiting for a session to be created looks for it, besides being woken
    /// by its created event.
    private let creationLook: Duration

    init(
        connection: NatsConnection,
        lifetime: Duration = .seconds(30),
        creationLook: Duration = .seconds(1),
        logger: Logger
    ) {
        self.connection = connection
        self.lifetime = lifetime
        self.creationLook = creationLook
        self.logger = logger
    }

    /// The session named by `session` (friendlyId or externalId) in the environment, or nil.
    ///
    /// - Throws: ``APIError`` 503 when the control plane does not answer.
    func session(_ session: String, environmentId: String) async throws -> SessionRecord? {
        // Trimmed as the control plane trims names, so that its notices (which carry the stored,
        // trimmed externalId) reach this entry.
        let session = session.trimmingCharacters(in: .whitespacesAndNewlines)
        let key = Key(environmentId: environmentId, session: session)
        let now = ContinuousClock.now
        let answer = cache.withLock { state -> Answer in
            if case .session(let record, let fetchedAt)? = state.entries[key], now - fetchedAt < lifetime {
                return .cached(record)
            }
            if let lookup = state.lookups[key] { return .lookup(lookup.task) }
            state.lastLookup += 1
            let id = state.lastLookup
            let task = Task { try await self.lookUp(session, key: key, id: id, asked: now) }
            state.lookups[key] = (id, task)
            return .lookup(task)
        }
        switch answer {
        case .cached(let record): return record
        case .lookup(let task): return try await task.value
        }
    }

    private enum Answer {
        case cached(SessionRecord)
        case lookup(Task<SessionRecord?, any Error>)
    }

    /// Asks the control plane, keeps the answer unless it is out of date, and ends the lookup.
    private func lookUp(
        _ session: String,
        key: Key,
        id: UInt64,
        asked: ContinuousClock.Instant
    ) async throws
        -> SessionRecord?
    {
        let outcome: Result<SessionRecord?, any Error>
        do {
            outcome = .success(try await connection.resolveSession(session, environmentId: key.environmentId))
        } catch {
            outcome = .failure(error)
        }
        cache.withLock { state in
            if state.lookups[key]?.id == id { state.lookups[key] = nil }
            guard case .success(let record?) = outcome else { return }
            // Out of date: the session changed, or a lookup asked later already answered, since
            // this one asked (a slow answer from before a close must not replace a closed one).
            switch state.entries[key] {
            case .changed(let at)? where at >= asked: return
            case .session(_, let fetchedAt)? where fetchedAt > asked: return
            default: break
            }
            if state.entries.count >= 100_000 { state.entries.removeAll() }
            state.entries[key] = .session(record, fetchedAt: asked)
        }
        return try outcome.get()
    }

    /// Checks again, at an append's turn, that the channel's session still takes records: a
    /// close made while the append waited for the ones before it is seen (its notice has
    /// dropped the cached session by then).
    ///
    /// - Throws: ``AppendRefused`` when the session closed or expired. (Sessions are never
    /// deleted; one the control plane does not know is a channel a store client minted its own
    /// token for, as the contract tests do.)
    func admit(_ channel: ChannelAddress, _ action: String) async throws {
        if let session = try await session(channel.friendlyId, environmentId: channel.environmentId),
            let refusal = session.writeRefusal(action)
        {
            throw AppendRefused(message: refusal)
        }
    }

    /// Like ``session(_:environmentId:)``, but waits up to `timeout` for the session to be
    /// created when it does not exist yet (subscribing by externalId before the task made it).
    func waitForSession(_ session: String, environmentId: String, timeout: Duration) async throws -> SessionRecord? {
        let session = session.trimmingCharacters(in: .whitespacesAndNewlines)
        let deadline = ContinuousClock.now + timeout
        let key = Key(environmentId: environmentId, session: session)
        let id = lastWaiter.add(1, ordering: .relaxed).newValue
        defer {
            creations.withLock { creations in
                creations[key]?[id] = nil
                if creations[key]?.isEmpty == true { creations[key] = nil }
            }
        }
        while true {
            // A stream per turn, listening before the look: the turn that ends cancels the
            // iteration of its stream, which finishes it for good (iterated again, it would end
            // at once, and this loop would look a thousand times a second).
            let (created, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
            creations.withLock { $0[key, default: [:]][id] = continuation }
            if let record = try await self.session(session, environmentId: environmentId) { return record }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero, !Task.isCancelled else { return nil }
            // Woken by the created event; the periodic look covers an event lost to a reconnect.
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await _ in created { return }
                }
                group.addTask { [creationLook] in try? await Task.sleep(for: min(remaining, creationLook)) }
                await group.next()
                group.cancelAll()
            }
        }
    }

    func run() async throws {
        let events = try connection.subscribe(Subjects.allSessionEvents)
        let changes = try connection.subscribe(Subjects.allSessionChanges)
        let connectionEvents = connection.events
        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await message in events {
                        // A new session was not cached: its event matters only to a caller waiting
                        // for it to be created and to a lookup under way that may not find it.
                        // With neither, the event (one per create) is not read at all.
                        if message.subject.hasSuffix(Self.createdSuffix), !self.isWatchingCreations { continue }
                        guard let event = try? JSONDecoder.sessions.decode(SessionEvent.self, from: message.payload)
                        else {
                            continue
                        }
                        let names = [event.session.friendlyId, event.session.externalId, event.previousExternalId]
                            .compactMap { $0 }
                        self.forget(names, environmentId: event.session.environmentId, isNew: event.kind == .created)
                    }
                }
                group.addTask {
                    for await message in changes {
                        guard let change = try? JSONDecoder.sessions.decode(SessionChange.self, from: message.payload)
                        else {
                            continue
                        }
                        self.forget(change.names, environmentId: change.environmentId, isNew: false)
                    }
                }
                group.addTask {
                    // Events published while disconnected are lost: forget everything.
                    for await event in connectionEvents where event == .reconnected {
                        self.cache.withLock { $0 = State(lastLookup: $0.lastLookup) }
                    }
                }
                try await group.next()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            events.unsubscribe()
            changes.unsubscribe()
        }
    }

    private static let createdSuffix = "." + SessionEvent.Kind.created.rawValue

    /// Whether a created event could matter: someone waits for a session to be created, or a
    /// lookup is under way.
    private var isWatchingCreations: Bool {
        !creations.withLock(\.isEmpty) || !cache.withLock(\.lookups.isEmpty)
    }

    /// Drops the cached session under these names and wakes whoever waits for its creation.
    /// A new session was not cached (misses are not), so it leaves no mark.
    func forget(_ names: [String], environmentId: String, isNew: Bool) {
        let keys = names.map { Key(environmentId: environmentId, session: $0) }
        let now = ContinuousClock.now
        cache.withLock { state in
            if state.entries.count >= 100_000 { state.entries.removeAll() }
            for key in keys {
                state.entries[key] = isNew ? nil : .changed(at: now)
                state.lookups[key] = nil
            }
        }
        let waiting = creations.withLock { creations in keys.flatMap { creations[$0]?.values.map { $0 } ?? [] } }
        for waiter in waiting { waiter.yield() }
    }
}
