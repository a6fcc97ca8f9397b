import Contracts
import Logging
import Metrics
import Synchronization

/// Fans each channel's new records out to every local subscriber from one upstream follow per
/// channel, however many subscribers it has. A subscriber registers first and then replays
/// history from the store; what lies between its replay and the feed's first record (appended
/// while both began) and any gap in what the feed delivers are read from the store
/// (``Subscription/next()``), so nothing is missed.
final class ChannelHub: Sendable {
    private struct Feed {
        /// Tells this feed from a later one of the same channel, so an ending pump clears only its own.
        var generation: UInt64
        var subscribers: [UInt64: Mailbox] = [:]
        var pump: Task<Void, Never>?
        /// The first sequence number the feed delivers, once its follow has begun.
        var start: UInt64?
    }

    let store: any StreamStore
    /// Records a subscriber may fall behind before it is disconnected.
    let mailboxLimit: Int
    let logger: Logger
    private let feeds = Mutex<[ChannelAddress: Feed]>([:])
    private let lastID = Atomic<UInt64>(0)
    private let isShutDown = Atomic<Bool>(false)

    init(store: any StreamStore, mailboxLimit: Int = 1000, logger: Logger) {
        self.store = store
        self.mailboxLimit = mailboxLimit
        self.logger = logger
    }

    /// Channels with a live feed, and their subscribers (for metrics and tests).
    var counts: (channels: Int, subscribers: Int) {
        feeds.withLock { feeds in (feeds.count, feeds.values.reduce(0) { $0 + $1.subscribers.count }) }
    }

    /// Subscribes to `channel` from `seqNum` on; call ``Subscription/cancel()`` when done.
    func subscribe(_ channel: ChannelAddress, from seqNum: UInt64) throws -> Subscription {
        guard !isShutDown.load(ordering: .relaxed) else { throw Mailbox.Ending.shutdown }
        let id = lastID.add(1, ordering: .relaxed).newValue
        let mailbox = Mailbox(limit: mailboxLimit)
        let isNew = feeds.withLock { feeds in
            let isNew = feeds[channel] == nil
            feeds[channel, default: Feed(generation: id)].subscribers[id] = mailbox
            recordCounts(feeds)
            return isNew
        }
        if isNew {
            let pump = Task { await self.pump(channel, generation: id) }
            let orphaned = feeds.withLock { feeds in
                guard feeds[channel]?.generation == id else { return true }
                feeds[channel]!.pump = pump
                return false
            }
            if orphaned { pump.cancel() }
        }
        return Subscription(hub: self, id: id, channel: channel, mailbox: mailbox, next: seqNum)
    }

    /// Ends every subscription (graceful shutdown); later subscribes fail.
    func shutdown() {
        isShutDown.store(true, ordering: .relaxed)
        let mailboxes = feeds.withLock { feeds in feeds.values.flatMap { $0.subscribers.values } }
        for mailbox in mailboxes { mailbox.end(.shutdown) }
    }

    fileprivate func unsubscribe(_ channel: ChannelAddress, id: UInt64) {
        let pump = feeds.withLock { feeds -> Task<Void, Never>? in
            feeds[channel]?.subscribers[id] = nil
            defer { recordCounts(feeds) }
            guard let feed = feeds[channel], feed.subscribers.isEmpty else { return nil }
            feeds[channel] = nil
            return feed.pump
        }
        pump?.cancel()
    }

    /// The first sequence number the channel's feed delivers; nil until its follow has begun.
    fileprivate func start(of channel: ChannelAddress) -> UInt64? {
        feeds.withLock { $0[channel]?.start }
    }

    private func recordCounts(_ feeds: [ChannelAddress: Feed]) {
        RealtimeMetrics.feeds.record(feeds.count)
        RealtimeMetrics.subscribers.record(feeds.values.reduce(0) { $0 + $1.subscribers.count })
    }

    /// Follows the channel from its current tail and hands every record to every subscriber of
    /// this feed (`generation`); when it ends, so does the feed, unless a newer one replaced it.
    private func pump(_ channel: ChannelAddress, generation: UInt64) async {
        do {
            let tail = try await store.tail(channel)
            let records = try await store.follow(channel, from: tail.nextSeqNum)
            // Subscribers that caught up before now read up to the start from the store.
            let waiting = feeds.withLock { feeds -> [Mailbox] in
                guard feeds[channel]?.generation == generation else { return [] }
                feeds[channel]!.start = tail.nextSeqNum
                return Array(feeds[channel]!.subscribers.values)
            }
            for mailbox in waiting { mailbox.wake() }
            for try await record in records {
                let slow = feeds.withLock { feeds -> [UInt64] in
                    guard let feed = feeds[channel], feed.generation == generation else { return [] }
                    return feed.subscribers.compactMap { id, mailbox in mailbox.push(CollectionOfOne(record)) ? nil : id
                    }
                }
                for id in slow { unsubscribe(channel, id: id) }
                if !slow.isEmpty { RealtimeMetrics.slowSubscribers.increment(by: slow.count) }
            }
        } catch {
            if !Task.isCancelled {
                logger.warning(
                    "A channel feed failed; its subscribers are disconnected.",
                    metadata: ["channel": "\(channel)", "error": "\(error)"]
                )
            }
        }
        let mailboxes = feeds.withLock { feeds -> [Mailbox] in
            guard let feed = feeds[channel], feed.generation == generation else { return [] }
            feeds[channel] = nil
            recordCounts(feeds)
            return Array(feed.subscribers.values)
        }
        for mailbox in mailboxes { mailbox.end(.upstreamFailed) }
    }
}

/// One subscriber's view of a channel: history first, then live records, in order, each once.
final class Subscription: Sendable {
    private let hub: ChannelHub
    private let id: UInt64
    let channel: ChannelAddress
    let mailbox: Mailbox
    private let position: Mutex<(next: UInt64, caughtUp: Bool)>
    static let replayBatch = 500

    fileprivate init(hub: ChannelHub, id: UInt64, channel: ChannelAddress, mailbox: Mailbox, next: UInt64) {
        self.hub = hub
        self.id = id
        self.channel = channel
        self.mailbox = mailbox
        self.position = Mutex((next, false))
    }

    /// The sequence number of the next record this subscriber gets.
    var nextSeqNum: UInt64 { position.withLock { $0.next } }

    /// The next records in order: history from the store until caught up, then live ones (gaps
    /// filled from the store). An empty array when woken by ``Mailbox/wake()``; nil when
    /// cancelled. Throws ``Mailbox/Ending`` when the subscription was ended.
    func next() async throws -> [ChannelRecord]? {
        let (next, caughtUp) = position.withLock { ($0.next, $0.caughtUp) }
        if !caughtUp {
            let records = try await hub.store.read(channel, from: next, limit: Self.replayBatch)
            position.withLock { position in
                if let last = records.last { position.next = last.seqNum + 1 }
                // A read that stopped short of its count reached the tail, unless its bytes did.
                position.caughtUp =
                    records.count < Self.replayBatch && records.bodyBytes < readBytes / 2
            }
            if !records.isEmpty { return records }
        }
        // Records from before the feed's start never come through it.
        if let start = hub.start(of: channel), next < start {
            let records = try await hub.store.read(
                channel,
                from: next,
                limit: Int(min(start - next, UInt64(Self.replayBatch)))
            )
            if let last = records.last {
                position.withLock { $0.next = last.seqNum + 1 }
                return records
            }
        }
        guard var live = try await mailbox.next() else { return nil }
        live.removeAll { $0.seqNum < position.withLock { $0.next } }
        guard let first = live.first else { return [] }
        var records: [ChannelRecord] = []
        var expected = position.withLock { $0.next }
        while expected < first.seqNum {
            let gap = try await hub.store.read(
                channel,
                from: expected,
                limit: Int(min(first.seqNum - expected, UInt64(Self.replayBatch)))
            )
            guard let last = gap.last else { break }
            records += gap.filter { $0.seqNum < first.seqNum }
            expected = last.seqNum + 1
        }
        records += live
        position.withLock { $0.next = records.last!.seqNum + 1 }
        return records
    }

    func cancel() {
        hub.unsubscribe(channel, id: id)
        mailbox.end(.shutdown)
    }
}
