import Contracts
import Crypto
import Foundation
import Logging
import Metrics
import Nats
import ServiceKit
import ServiceLifecycle
import Synchronization

/// Reads every appended record durably (JetStream consumer `waitpoints` on the channel stream)
/// and completes the waiters it is for. A record appended while this service was down is read
/// when it is back; a record is acknowledged only once handled.
///
/// Each channel's records are handled in order on a lane of their own, and the next fetch does
/// not wait for a fetched batch to be done: a record waking thousands of waiters, or one whose
/// waitpoints PostgreSQL is slow to update, holds up its own channel only.
struct AppendConsumer: Service {
    let engine: WaitpointEngine
    /// Shared by every instance: each appended record is handled once.
    let durableName: String
    let logger: Logger
    /// Records fetched and not yet handled, over all channels; fetching waits while there are
    /// this many.
    static let inHandLimit = 512

    func run() async throws {
        let lanes = ChannelLanes(limit: Self.inHandLimit) { await handle($0) }
        await engine.jetStream.consumeDurably(
            stream: Subjects.channelStream,
            durable: durableName,
            filterSubject: Subjects.allChannels,
            onlyNew: true,
            batch: 64,
            logger: logger,
            recreated: {
                // A new consumer starts at new records: those appended while none was there, and
                // one delivered but not yet acknowledged, are not read. Every pending waiter is
                // checked against its channel again instead.
                await engine.recheckAllPending()
            },
            handle: { messages in
                for message in messages { await lanes.enqueue(message) }
            }
        )
        // Graceful shutdown: what was fetched is handled (and acknowledged) before the end.
        await lanes.drained()
    }

    private func handle(_ message: AckableMessage) async {
        guard let channel = ChannelAddress(subject: message.message.subject),
            let record = ChannelRecord(message: message.message)
        else {
            try? message.terminate()
            return
        }
        do {
            let redelivered = (message.message.metadata?.deliveries ?? 2) > 1
            try await engine.appended(record, on: channel, redelivered: redelivered)
            try message.ack()
        } catch {
            logger.warning(
                "Handling an appended record failed; it is delivered again.",
                metadata: ["channel": "\(channel)", "seq_num": "\(record.seqNum)", "error": "\(error)"]
            )
            try? message.nak(delay: .seconds(1))
        }
    }
}

/// Runs `handle` on each message, one at a time per subject in arrival order, subjects in
/// parallel; ``enqueue(_:)`` waits while `limit` messages are in hand.
final class ChannelLanes: Sendable {
    private struct State {
        /// Per subject with a lane running: the messages queued behind the one it handles.
        var queued: [String: [AckableMessage]] = [:]
        var inHand = 0
        var waitingForRoom: [CheckedContinuation<Void, Never>] = []
        var waitingForEmpty: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())
    private let limit: Int
    private let handle: @Sendable (AckableMessage) async -> Void

    init(limit: Int, handle: @escaping @Sendable (AckableMessage) async -> Void) {
        self.limit = limit
        self.handle = handle
    }

    func enqueue(_ message: AckableMessage) async {
        let subject = message.message.subject
        await withCheckedContinuation { continuation in
            let hasRoom = state.withLock { state in
                guard state.inHand >= limit else { return true }
                state.waitingForRoom.append(continuation)
                return false
            }
            if hasRoom { continuation.resume() }
        }
        let startsLane = state.withLock { state in
            state.inHand += 1
            guard state.queued[subject] == nil else {
                state.queued[subject]!.append(message)
                return false
            }
            state.queued[subject] = []
            return true
        }
        if startsLane { Task { await runLane(subject, first: message) } }
    }

    /// Returns once no message is in hand.
    func drained() async {
        await withCheckedContinuation { continuation in
            let isEmpty = state.withLock { state in
                guard state.inHand > 0 else { return true }
                state.waitingForEmpty.append(continuation)
                return false
            }
            if isEmpty { continuation.resume() }
        }
    }

    private func runLane(_ subject: String, first: AckableMessage) async {
        var next: AckableMessage? = first
        while let message = next {
            await handle(message)
            var resumed: [CheckedContinuation<Void, Never>] = []
            next = state.withLock { state in
                state.inHand -= 1
                if !state.waitingForRoom.isEmpty { resumed.append(state.waitingForRoom.removeFirst()) }
                if state.inHand == 0 {
                    resumed += state.waitingForEmpty
                    state.waitingForEmpty = []
                }
                guard let following = state.queued[subject]?.first else {
                    state.queued[subject] = nil
                    return nil
                }
                state.queued[subject]!.removeFirst()
                return following
            }
            for continuation in resumed { continuation.resume() }
        }
    }
}

/// Times out due waitpoints (several instances may sweep at once: rows are claimed with
/// `FOR UPDATE SKIP LOCKED`), publishes events a crash left unpublished, refills Redis when it
/// lost its data, and registers the waiters Redis could not take when they came.
struct TimeoutSweeper: Service {
    let engine: WaitpointEngine
    let interval: Duration
    /// The append consumer, whose backlog is reported with the waitpoints'.
    let consumer: String
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                // Apart from the sweeps, so that a sweep that is stuck shows as overdue timeouts.
                group.addTask {
                    while !Task.isCancelled {
                        // Its only trouble would be the sweep's, which is logged.
                        if let backlog = try? await engine.store.backlog() { WaitpointsMetrics.record(backlog) }
                        if let records = try? await engine.jetStream.consumerBacklog(
                            stream: Subjects.channelStream,
                            consumer: consumer
                        ) {
                            WaitpointsMetrics.recordsBacklog.record(records.pending + records.unacknowledged)
                        }
                        try? await Task.sleep(for: .seconds(5))
                    }
                }
                while !Task.isCancelled {
                    do {
                        try await sweep()
                    } catch {
                        logger.warning("A waitpoint sweep failed.", metadata: ["error": "\(error)"])
                    }
                    try? await Task.sleep(for: interval)
                }
            }
        }
    }

    func sweep() async throws {
        // Timeouts first: they need only PostgreSQL, and a refill of Redis may take long.
        while true {
            let timedOut = try await engine.store.timeOutDue(limit: 100)
            engine.announce(timedOut, .timedOut)
            for waitpoint in timedOut { try? await engine.registry.remove(waitpoint.id, from: waitpoint.channel) }
            if timedOut.count < 100 { break }
        }
        do {
            _ = try await engine.refillRegistryIfEmpty()
            try await engine.registerUnregistered()
        } catch {
            // Redis (or realtime, for the checks) is unreachable: the next sweep tries again.
            logger.warning("Could not bring the Redis registry up to date.", metadata: ["error": "\(error)"])
        }
        let unpublished = try await engine.store.unpublished(limit: 100).filter {
            ($0.item.completedAt?.timeIntervalSinceNow ?? 0) < -5
        }
        engine.events.enqueue(unpublished.filter { $0.item.status == .timedOut }, .timedOut)
        engine.events.enqueue(unpublished.filter { $0.item.status != .timedOut }, .completed)
    }
}

/// Publishes waitpoint events on JetStream off the completion path and marks each waitpoint
/// published once JetStream has it; what it could not publish, the sweeper enqueues again.
///
/// Whatever is waiting when the publisher gets to it goes out together: one message per
/// environment and kind, up to 100 waitpoints each. JetStream writes (and syncs) every message
/// on its own, so a burst of completions — one record waking many waiters, or many records at
/// once — costs it a write per message rather than per waitpoint, and leaves room for appends.
final class EventPublisher: Service, Sendable {
    private let waiting = Mutex<[(Waitpoint, WaitpointEvent.Kind)]>([])
    private let signals: AsyncStream<Void>
    private let signal: AsyncStream<Void>.Continuation
    let jetStream: JetStream
    let store: WaitpointStore
    let logger: Logger
    static let concurrency = 32
    static let batchLimit = 100

    init(jetStream: JetStream, store: WaitpointStore, logger: Logger) {
        (signals, signal) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        self.jetStream = jetStream
        self.store = store
        self.logger = logger
    }

    /// Queues the events of these waitpoints, except those already queued, on their way, or
    /// published lately: the sweeper finds a waitpoint unpublished until it is marked, its read
    /// may be from before the mark, and a second copy in another batch would get another
    /// message id, which JetStream would not drop.
    func enqueue(_ waitpoints: [Waitpoint], _ kind: WaitpointEvent.Kind) {
        let fresh = inFlight.withLock { state in
            waitpoints.filter { !state.recentlyMarked(contains: $0.id) && state.ids.insert($0.id).inserted }
        }
        guard !fresh.isEmpty else { return }
        waiting.withLock { $0 += fresh.map { ($0, kind) } }
        signal.yield()
    }

    /// Ids queued, being published, or published and not yet marked so in PostgreSQL; and those
    /// marked in the last 30 to 60 s.
    private struct InFlight {
        var ids: Set<String> = []
        var marked: Set<String> = []
        var markedBefore: Set<String> = []
        var rotatedAt = ContinuousClock.now

        func recentlyMarked(contains id: String) -> Bool { marked.contains(id) || markedBefore.contains(id) }

        mutating func markedNow(_ newly: [String]) {
            if ContinuousClock.now - rotatedAt > .seconds(30) {
                markedBefore = marked
                marked = []
                rotatedAt = .now
            }
            marked.formUnion(newly)
        }
    }

    private let inFlight = Mutex(InFlight())

    /// Lets these be queued again: their publish failed.
    private func release(_ ids: [String]) {
        inFlight.withLock { state in for id in ids { state.ids.remove(id) } }
    }

    func run() async throws {
        // Published ids are marked in PostgreSQL in batches, one statement each.
        let marker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                await self.markPublished()
            }
        }
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                var running = 0
                for await _ in signals {
                    for batch in takeBatches() {
                        if running == Self.concurrency {
                            await group.next()
                            running -= 1
                        }
                        group.addTask { await self.publish(batch.waitpoints, batch.kind) }
                        running += 1
                    }
                }
                // Shutting down: what is still waiting goes out too; the group waits for it all.
                for batch in takeBatches() { group.addTask { await self.publish(batch.waitpoints, batch.kind) } }
            }
        } onGracefulShutdown: {
            self.signal.finish()
        }
        // Its last round may have given ids back (a cancelled statement): wait for it first.
        marker.cancel()
        await marker.value
        await markPublished()
    }

    /// Everything waiting, grouped by environment and kind, in order, in messages of at most
    /// `batchLimit` waitpoints and about ``WaitpointMessages/byteLimit`` bytes.
    private func takeBatches() -> [(waitpoints: [Waitpoint], kind: WaitpointEvent.Kind)] {
        let taken = waiting.withLock { waiting in
            defer { waiting = [] }
            return waiting
        }
        var groups: [(waitpoints: [Waitpoint], kind: WaitpointEvent.Kind)] = []
        var index: [String: Int] = [:]  // "env kind" → its group
        for (waitpoint, kind) in taken {
            let key = "\(waitpoint.item.environmentId) \(kind.rawValue)"
            if let at = index[key] {
                groups[at].waitpoints.append(waitpoint)
            } else {
                index[key] = groups.count
                groups.append(([waitpoint], kind))
            }
        }
        return groups.flatMap { group in
            WaitpointMessages.split(group.waitpoints, count: Self.batchLimit, size: { $0.item.messageSize })
                .map { ($0, group.kind) }
        }
    }

    private let published = Mutex<[String]>([])

    private func markPublished() async {
        let ids = published.withLock { ids in
            defer { ids = [] }
            return ids
        }
        guard !ids.isEmpty else { return }
        do {
            try await store.markPublished(ids)
            inFlight.withLock { state in
                for id in ids { state.ids.remove(id) }
                state.markedNow(ids)
            }
        } catch {
            // They are on JetStream: marking them is tried again, and meanwhile they stay in
            // flight so that the sweeper does not publish them twice.
            published.withLock { $0 += ids }
            logger.warning("Could not mark waitpoint events published; trying again.", metadata: ["error": "\(error)"])
        }
    }

    private func publish(_ waitpoints: [Waitpoint], _ kind: WaitpointEvent.Kind) async {
        let ids = waitpoints.map(\.id)
        do {
            _ = try await jetStream.publish(
                Subjects.waitpointEvent(environmentId: waitpoints[0].item.environmentId, kind: kind),
                payload: try JSONEncoder.sessions.encode(
                    WaitpointEvent(kind: kind, waitpoints: waitpoints.map(\.item))
                ),
                messageID: Self.messageID(ids, kind)
            )
            published.withLock { $0 += ids }
        } catch {
            release(ids)
            logger.warning(
                "Waitpoint events are not published yet; the sweeper retries.",
                metadata: ["waitpoint.ids": "\(ids)", "error": "\(error)"]
            )
        }
    }

    /// The same waitpoints settled the same way get the same id, so JetStream drops a copy that a
    /// retry after a crash publishes again within its duplicate window.
    static func messageID(_ ids: [String], _ kind: WaitpointEvent.Kind) -> String {
        guard ids.count > 1 else { return "\(ids[0]):\(kind.rawValue)" }
        let digest = SHA256.hash(data: Data(ids.sorted().joined(separator: ",").utf8))
        return "\(kind.rawValue):" + digest.map { String(format: "%02x", $0) }.joined()
    }
}

/// Wakes this instance's long-polls when any instance announces settled waitpoints: one
/// subscription to `waitpoints.settled` per instance instead of one per waiting request.
final class SettledSignals: Service, Sendable {
    private let waiting = Mutex<[String: [UInt64: AsyncStream<WaitpointItem?>.Continuation]]>([:])
    private let lastID = Atomic<UInt64>(0)
    let connection: NatsConnection
    /// Marks this instance's announcements, which it has delivered already when they come back.
    private let instance = UUID().uuidString
    static let instanceHeader = "Sessions-Instance"

    init(connection: NatsConnection) { self.connection = connection }

    /// Wakes this instance's listeners of these settled waitpoints at once, and every other
    /// instance's through NATS (best effort).
    func announce(_ items: [WaitpointItem]) {
        deliver(items)
        for part in WaitpointMessages.split(items, count: .max, size: \.messageSize) {
            if let payload = try? JSONEncoder.sessions.encode(part) {
                try? connection.publish(
                    Subjects.waitpointsSettled,
                    payload: payload,
                    headers: [Self.instanceHeader: instance]
                )
            }
        }
    }

    func run() async throws {
        let subscription = try connection.subscribe(Subjects.waitpointsSettled)
        let connectionEvents = connection.events
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    // Signals sent while disconnected are lost: every waiter looks again.
                    for await event in connectionEvents where event == .reconnected {
                        let waiters = self.waiting.withLock { $0.values.flatMap(\.values) }
                        for waiter in waiters { waiter.yield(nil) }
                    }
                }
                for await message in subscription where message.headers[Self.instanceHeader] != instance {
                    // The signal carries the settled waitpoints, so woken polls answer without a query.
                    guard let items = try? JSONDecoder.sessions.decode([WaitpointItem].self, from: message.payload)
                    else { continue }
                    deliver(items)
                }
                group.cancelAll()
            }
        } onGracefulShutdown: {
            subscription.unsubscribe()
        }
    }

    /// Wakes the listeners of these settled waitpoints (a listener that already heard of its
    /// settlement has stopped listening, so hearing twice is harmless).
    private func deliver(_ items: [WaitpointItem]) {
        for item in items {
            let waiters = waiting.withLock { $0[item.id].map { Array($0.values) } ?? [] }
            for waiter in waiters { waiter.yield(item) }
        }
    }

    /// Yields the settled waitpoint once it settles, or nil when signals may have been lost (a
    /// reconnect) and the waitpoint should be looked at again. Listen before looking at its
    /// state, so that a settlement in between is not missed; stop listening by ending the iteration.
    func listen(_ waitpointId: String) -> AsyncStream<WaitpointItem?> {
        let (signals, continuation) = AsyncStream<WaitpointItem?>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = lastID.add(1, ordering: .relaxed).newValue
        waiting.withLock { $0[waitpointId, default: [:]][id] = continuation }
        continuation.onTermination = { [weak self] _ in
            self?.waiting.withLock { waiting in
                waiting[waitpointId]?[id] = nil
                if waiting[waitpointId]?.isEmpty == true { waiting[waitpointId] = nil }
            }
        }
        return signals
    }
}

/// Settled waitpoints carry their output (a record of up to 512 KiB, longer once escaped), so
/// the messages that carry many of them are cut by size as well as by count: NATS refuses a
/// message over its `max_payload` (8 MB in our configuration), and a refused event batch would
/// come back on every sweep.
enum WaitpointMessages {
    /// About this many bytes of outputs per message; a larger single output goes alone (escaped
    /// six times over it still fits).
    static let byteLimit = 1 << 20

    /// `elements`, in order, in runs of at most `count` elements and `byteLimit` bytes.
    static func split<Element>(_ elements: [Element], count: Int, size: (Element) -> Int) -> [[Element]] {
        var runs: [[Element]] = []
        var bytes = 0
        for element in elements {
            let elementBytes = size(element)
            if let last = runs.last, last.count < count, bytes + elementBytes <= byteLimit {
                runs[runs.count - 1].append(element)
                bytes += elementBytes
            } else {
                runs.append([element])
                bytes = elementBytes
            }
        }
        return runs
    }
}

extension WaitpointItem {
    /// What this waitpoint weighs in a message: its output, and room for the rest of it.
    var messageSize: Int { (output?.value.utf8.count ?? 0) + 512 }
}
