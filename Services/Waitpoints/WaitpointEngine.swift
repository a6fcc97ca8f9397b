import Contracts
import Foundation
import Logging
import Metrics
import Nats
import ServiceKit
import Synchronization

/// Registers waiters, checks for records that arrived before they registered, completes them
/// when a record is appended, and announces every waitpoint that leaves `PENDING`.
///
/// No lost wake-up: a waiter is registered (PostgreSQL row, then Redis) before the
/// channel is checked, so a record appended at any moment is seen by the check or by the
/// append's drain. No double completion: completion is a conditional update.
struct WaitpointEngine: Sendable {
    let store: WaitpointStore
    let registry: WaitRegistry
    let connection: NatsConnection
    let jetStream: JetStream
    let events: EventPublisher
    /// Where this instance's long-polls listen; settlements reach them here at once, and
    /// other instances' through NATS.
    let settled: SettledSignals
    let logger: Logger
    let refills = SingleFlight<Bool>()

    // MARK: Registration

    /// Puts the waiter in the registry, then completes it at once if its record is already there.
    ///
    /// When Redis cannot take it, the row is marked `unregistered` and the sweeper registers it
    /// (and checks again) later: a drain that finds an empty set skips PostgreSQL, so a waiter
    /// missing from Redis would otherwise wait for its timeout.
    ///
    /// With `check: false` (realtime did not answer just now) the channel is left to the sweeper
    /// at once, rather than asked again.
    ///
    /// - Throws: only when neither Redis nor PostgreSQL could note the waiter.
    func register(_ waitpoint: Waitpoint, check: Bool = true) async throws {
        do {
            try await registry.add(waitpoint)
        } catch {
            logger.warning(
                "Could not register a waiter in Redis; the sweeper registers it later.",
                metadata: ["waitpoint.id": "\(waitpoint.id)", "error": "\(error)"]
            )
            try await store.markUnregistered(waitpoint.id)
        }
        if check {
            await raceCheck(waitpoint)
        } else {
            try await store.markUnregistered(waitpoint.id)
        }
    }

    /// Registers and checks again the waiters marked for it, page by page; one that fails stays
    /// marked for the next sweep without holding up those after it.
    func registerUnregistered() async throws {
        var after: (Date, String)?
        var failures = 0
        while true {
            let page = try await store.unregistered(after: after, limit: 100)
            var done: [String] = []
            for waitpoint in page {
                do {
                    try await registry.add(waitpoint)
                    try await completeFromChannel(waitpoint)
                    done.append(waitpoint.id)
                } catch {
                    failures += 1
                }
            }
            try await store.markRegistered(done)
            guard let last = page.last, page.count == 100 else { break }
            after = (last.item.createdAt, last.id)
        }
        if failures > 0 {
            logger.warning(
                "Some waiters could not be registered and checked; the next sweep tries again.",
                metadata: ["waitpoints.count": "\(failures)"]
            )
        }
    }

    /// Marks every pending waitpoint for the sweeper, which registers and checks each again;
    /// tries until PostgreSQL takes it (or the task is cancelled).
    func recheckAllPending() async {
        while !Task.isCancelled {
            do {
                return try await store.markAllPendingUnregistered()
            } catch {
                logger.warning(
                    "Could not mark the pending waiters for a check; retrying.",
                    metadata: ["error": "\(error)"]
                )
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Completes the waitpoint with the first record at or after its `fromSeqNum`, if there is
    /// one. When that fails (realtime unreachable), the row is marked for the sweeper, which
    /// checks again: the record may be there already, and then no append would wake the waiter.
    func raceCheck(_ waitpoint: Waitpoint) async {
        do {
            try await completeFromChannel(waitpoint)
        } catch {
            logger.warning(
                "The race check failed; the sweeper checks again.",
                metadata: ["waitpoint.id": "\(waitpoint.id)", "error": "\(error)"]
            )
            do {
                try await store.markUnregistered(waitpoint.id)
            } catch {
                logger.error(
                    "Could not mark a waiter for the sweeper; an append or its timeout completes it.",
                    metadata: ["waitpoint.id": "\(waitpoint.id)", "error": "\(error)"]
                )
            }
        }
    }

    /// Completes the waitpoint with the first record at or after its `fromSeqNum`, if there is one.
    /// If there is none, and the waitpoint waits past the channel's end (its `lastSeqNum` was
    /// taken unchecked while realtime was away) or for a command record, it is moved to wait for
    /// the next record, registered there, and checked again — a record appended meanwhile is not
    /// missed.
    func completeFromChannel(_ waitpoint: Waitpoint) async throws {
        let found = try await firstRecord(waitpoint.channel, from: waitpoint.fromSeqNum)
        if let record = found.record { return try await complete(waitpoint, with: record) }
        guard found.start != waitpoint.fromSeqNum,
            let moved = try await store.moveStart(of: waitpoint.id, to: found.start)
        else { return }
        try await registry.add(moved)
        if let record = try await firstRecord(moved.channel, from: moved.fromSeqNum).record {
            try await complete(moved, with: record)
        }
    }

    private func complete(_ waitpoint: Waitpoint, with record: ChannelRecord) async throws {
        let completed = try await store.complete([waitpoint.id], with: Self.output(of: record))
        announce(completed, .completed)
        try? await registry.remove(waitpoint.id, from: waitpoint.channel)
    }

    /// The first record of a channel at or after `seqNum` that wakes waiters, if there is one;
    /// else where a waiter for it should wait: `seqNum`, but never past the channel's end (as a
    /// clamped read starts at the tail) and past the command records after it. Command records
    /// (S2's `trim` and `fence`) wake no one: readers skip them. One record is read first (the
    /// usual answer), then pages of 100; at most about 1,000 commands are looked at in one call,
    /// and the waiter then waits after them.
    func firstRecord(
        _ channel: ChannelAddress,
        from seqNum: UInt64
    ) async throws -> (record: ChannelRecord?, start: UInt64) {
        var from = seqNum
        for page in 0..<11 {
            let response = try await readChannel(channel, from: from, limit: page == 0 ? 1 : 100)
            if let record = response.records.first(where: { !$0.isCommand }) { return (record, record.seqNum) }
            guard let last = response.records.last else { return (nil, min(from, response.nextSeqNum)) }
            from = last.seqNum + 1
        }
        return (nil, from)
    }
    /// Records of a channel from `seqNum` on, through realtime's `channels.read`.
    /// Asks realtime, twice if the first request goes unanswered within a second (the time one
    /// request had before): an instance that died holding it never answers, and the next request
    /// goes to one that lives.
    func readChannel(_ channel: ChannelAddress, from seqNum: UInt64, limit: Int) async throws -> ReadChannelResponse {
        let request = try JSONEncoder.sessions.encode(
            ReadChannelRequest(channel: channel, fromSeqNum: seqNum, limit: limit)
        )
        var attempt = 1
        while true {
            do {
                let reply = try await connection.serviceRequest(
                    Subjects.readChannel,
                    payload: request,
                    timeout: .seconds(1)
                )
                return try JSONDecoder.sessions.decode(ReadChannelResponse.self, from: reply)
            } catch let error as NatsError where error.code == .timeout && attempt == 1 {
                attempt += 1
            }
        }
    }

    // MARK: Appends

    /// A record was appended to `channel`: completes every waiter it is for.
    ///
    /// A record no waiter in Redis waits for (or for an earlier one) is done after one Redis
    /// round trip, unless PostgreSQL has to be asked: the registry lost its data (it is filled
    /// again first), Redis is unreachable, or the record is `redelivered` — a drain before it
    /// may have taken waiters out and then failed. PostgreSQL says who the record completes,
    /// including waiters Redis lost. A waiter gets the first record at or after its fromSeqNum,
    /// which is not this one when it was registered further back: that one is read from the
    /// channel. Waiters for later records stay in the registry, untouched.
    func appended(_ record: ChannelRecord, on channel: ChannelAddress, redelivered: Bool) async throws {
        // Its waiters stay registered: the next record takes them (as overdue).
        guard !record.isCommand else { return }
        do {
            let drained = try await registry.drain(channel, upTo: record.seqNum)
            if !drained.isFilled {
                _ = try await refillRegistryIfEmpty()
            } else if drained.waiters == 0 && !redelivered {
                WaitpointsMetrics.recordsSeenByRedisOnly.increment()
                return
            }
        } catch {
            // PostgreSQL below still completes the waiters: Redis down delays no wake-up.
            logger.warning(
                "Could not drain (or refill) the Redis registry of waiters.",
                metadata: ["channel": "\(channel)", "error": "\(error)"]
            )
        }
        WaitpointsMetrics.recordsSettledInPostgres.increment()
        let (completed, overdue) = try await store.settle(
            channel,
            seqNum: record.seqNum,
            output: Self.output(of: record)
        )
        announce(completed, .completed)
        // These waiters were drained from Redis: each failure here throws, so the record is
        // delivered again (and consults PostgreSQL) instead of being acknowledged with a waiter
        // left out of the registry — as a shutdown that cancels this half-way would otherwise do.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for waitpoint in overdue { group.addTask { try await completeFromChannel(waitpoint) } }
            try await group.waitForAll()
        }
        try Task.checkCancellation()
    }

    /// When Redis lost its data, registers every pending waitpoint again. True when it did. The
    /// append handlers and the sweeper that find it empty at once share one refill.
    func refillRegistryIfEmpty() async throws -> Bool {
        try await refills.run { try await refillNow() }
    }

    private func refillNow() async throws -> Bool {
        guard try await !registry.isFilled() else { return false }
        var after = ""
        var count = 0
        while true {
            let page = try await store.allPending(after: after, limit: 500)
            for waitpoint in page {
                try await registry.add(waitpoint)
            }
            count += page.count
            guard let last = page.last, page.count == 500 else { break }
            after = last.id
        }
        try await registry.markFilled()
        logger.notice("Registered the pending waitpoints in Redis again.", metadata: ["waitpoints.count": "\(count)"])
        return true
    }

    // MARK: Completion

    /// Wakes long-polling waiters at once — this instance's directly, every other one's through
    /// NATS — and queues the waitpoints' durable event.
    func announce(_ waitpoints: [Waitpoint], _ kind: WaitpointEvent.Kind) {
        guard !waitpoints.isEmpty else { return }
        settled.announce(waitpoints.map(\.item))
        events.enqueue(waitpoints, kind)
    }

    /// Kept 7 days, as the session events are: the waitpoint rows are the record; the events
    /// are for run engines catching up.
    static func eventStreamConfiguration() -> StreamConfiguration {
        StreamConfiguration(
            name: Subjects.waitpointEventsStream,
            subjects: [Subjects.allWaitpointEvents],
            maxAge: .seconds(7 * 86_400)
        )
    }

    /// What a record completes its waiters with: its data and its sequence number. A record of
    /// bytes that are not text (an S2 writer's, in base64 format) gives their base64, typed
    /// `application/octet-stream`.
    static func output(of record: ChannelRecord) -> WaitpointOutput {
        record.isBinary
            ? WaitpointOutput(value: record.body, type: "application/octet-stream", seqNum: record.seqNum)
            : WaitpointOutput(value: data(of: record), seqNum: record.seqNum)
    }

    /// The record's data: the envelope's `data` (its JSON text as written when it is not a
    /// string: decoding and encoding it again would sort its keys and round big numbers), or the
    /// whole body when it is not an envelope.
    static func data(of record: ChannelRecord) -> String {
        guard case .object(let envelope)? = try? JSONDecoder().decode(JSONValue.self, from: Data(record.body.utf8)),
            let data = envelope["data"]
        else { return record.body }
        if case .string(let text) = data { return text }
        return RawJSON.member("data", of: record.body)
            ?? (try? String(decoding: JSONEncoder.sessions.encode(data), as: UTF8.self)) ?? record.body
    }
}

/// Work that callers arriving while it runs share: they wait for the run under way and get its
/// result, instead of starting one each.
final class SingleFlight<Value: Sendable>: Sendable {
    private let running = Mutex<Task<Value, any Error>?>(nil)

    func run(_ work: @escaping @Sendable () async throws -> Value) async throws -> Value {
        let task = running.withLock { running in
            if let task = running { return task }
            let task = Task { try await work() }
            running = task
            return task
        }
        defer { running.withLock { if $0 == task { $0 = nil } } }
        return try await task.value
    }
}
