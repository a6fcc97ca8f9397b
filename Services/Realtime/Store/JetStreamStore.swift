import Contracts
import Crypto
import Foundation
import Nats
import Synchronization

/// Channel records in one JetStream stream, one subject per channel (``ChannelAddress/subject``).
///
/// Each message carries its dense per-channel sequence number in a header; appends set
/// expected-last-subject-sequence, so concurrent writers (in this process or another instance)
/// never fork or skip a number — a loser re-reads the tail and tries again. An append with a part
/// id also writes a marker on `sessions-parts.{env}.{session}.{io}.{sha256(partId)}` in the same
/// atomic batch, expected to be that subject's first message: the marker makes the part id
/// idempotent for the life of the channel, atomically with the record.
final class JetStreamStore: StreamStore {
    let jetStream: JetStream
    let stream = Subjects.channelStream
    private let writers = KeyedLock<ChannelAddress>()
    private let positions = Mutex<[ChannelAddress: Position]>([:])
    private static let maxAttempts = 100
    private static let maxCachedPositions = 100_000

    /// Where a channel ends: the stream sequence of its last record (0 when empty) and the
    /// sequence number the next record gets. Cached for appends; a stale one only costs a retry.
    struct Position: Equatable {
        var lastStreamSequence: UInt64
        var nextSeqNum: UInt64
        var timestamp: Int64
    }

    init(jetStream: JetStream) { self.jetStream = jetStream }

    static func streamConfiguration(storage: String = "file") -> StreamConfiguration {
        StreamConfiguration(
            name: Subjects.channelStream,
            subjects: [Subjects.allChannels, "sessions-parts.>"],
            storage: storage,
            allowAtomic: true
        )
    }

    /// Creates the stream, or updates its configuration.
    func prepare() async throws {
        _ = try await jetStream.createOrUpdateStream(Self.streamConfiguration())
    }

    // MARK: StreamStore

    func append(
        _ channel: ChannelAddress,
        bodies: [String],
        partId: String?,
        matchSeqNum: UInt64?
    ) async throws
        -> AppendAck
    {
        guard (1...1000).contains(bodies.count) else { throw StreamStoreError.batchTooLarge }
        let marker = partId.map { partSubject(channel, partId: $0) }
        return try await writers.withLock(channel) {
            for _ in 0..<Self.maxAttempts {
                if let marker,
                    let existing = try await nats({
                        try await jetStream.directGet(stream: stream, .lastBySubject(marker))
                    })
                {
                    return try JSONDecoder().decode(AppendAck.self, from: existing.payload)
                }
                let position = try await position(channel)
                if let matchSeqNum, matchSeqNum != position.nextSeqNum {
                    throw StreamStoreError.seqNumMismatch(nextSeqNum: position.nextSeqNum)
                }
                let start = position.nextSeqNum
                let ack = AppendAck(
                    start: start,
                    end: start + UInt64(bodies.count),
                    timestamp: Int64(Date().timeIntervalSince1970 * 1000)
                )
                var messages = bodies.enumerated().map { index, body in
                    JetStream.BatchMessage(
                        subject: channel.subject,
                        payload: Data(body.utf8),
                        headers: [Subjects.channelSeqHeader: String(start + UInt64(index))],
                        expectedLastSubjectSequence: index == 0 ? position.lastStreamSequence : nil
                    )
                }
                if let marker {
                    messages.append(
                        .init(subject: marker, payload: try JSONEncoder().encode(ack), expectedLastSubjectSequence: 0)
                    )
                }
                do {
                    let published = try await nats {
                        if messages.count == 1, let only = messages.first {
                            try await jetStream.publish(
                                only.subject,
                                payload: only.payload,
                                headers: only.headers,
                                expectedLastSubjectSequence: only.expectedLastSubjectSequence
                            )
                        } else {
                            try await jetStream.publishBatch(messages)
                        }
                    }
                    remember(
                        channel,
                        Position(
                            lastStreamSequence: published.sequence - (marker == nil ? 0 : 1),
                            nextSeqNum: ack.end,
                            timestamp: ack.timestamp
                        )
                    )
                    return ack
                } catch StreamStoreError.conflict {
                    // Another writer appended first (or stored this part id): read again and retry.
                    forget(channel)
                }
            }
            throw StreamStoreError.unavailable("too many concurrent appends to \(channel)")
        }
    }

    func read(_ channel: ChannelAddress, from seqNum: UInt64, limit: Int) async throws -> [ChannelRecord] {
        let position = try await position(channel)
        let start = try await streamSequence(of: seqNum, in: channel, position: position)
        let messages = try await nats {
            try await jetStream.directGetBatch(stream: stream, subject: channel.subject, from: start, maxCount: limit)
        }
        return messages.compactMap(Self.record).filter { $0.seqNum >= seqNum }
    }

    func tail(_ channel: ChannelAddress) async throws -> ChannelTail {
        forget(channel)
        let position = try await position(channel)
        return ChannelTail(nextSeqNum: position.nextSeqNum, timestamp: position.timestamp)
    }

    func follow(
        _ channel: ChannelAddress,
        from seqNum: UInt64
    ) async throws -> AsyncThrowingStream<
        ChannelRecord, any Error
    > {
        let position = try await position(channel)
        let deliver: JetStream.DeliverPolicy =
            seqNum == 0 || position.lastStreamSequence == 0
            ? .all : .startSequence(try await streamSequence(of: seqNum, in: channel, position: position))
        let subscription = try jetStream.orderedConsumer(stream: stream, subject: channel.subject, deliver: deliver)
        let (records, continuation) = AsyncThrowingStream<ChannelRecord, any Error>.makeStream()
        let pump = Task {
            for await message in subscription {
                guard let record = Self.record(message), record.seqNum >= seqNum else { continue }
                continuation.yield(record)
            }
            continuation.finish(throwing: StreamStoreError.unavailable("the channel subscription ended"))
        }
        continuation.onTermination = { _ in
            pump.cancel()
            subscription.unsubscribe()
        }
        return records
    }

    // MARK: Positions

    private func position(_ channel: ChannelAddress) async throws -> Position {
        if let cached = positions.withLock({ $0[channel] }) { return cached }
        guard
            let last = try await nats({
                try await jetStream.directGet(stream: stream, .lastBySubject(channel.subject))
            }),
            let record = Self.record(last)
        else { return Position(lastStreamSequence: 0, nextSeqNum: 0, timestamp: 0) }
        let position = Position(
            lastStreamSequence: last.metadata?.streamSequence ?? 0,
            nextSeqNum: record.seqNum + 1,
            timestamp: record.timestamp
        )
        remember(channel, position)
        return position
    }

    private func remember(_ channel: ChannelAddress, _ position: Position) {
        positions.withLock { positions in
            if positions.count >= Self.maxCachedPositions { positions.removeAll() }
            positions[channel] = position
        }
    }

    private func forget(_ channel: ChannelAddress) {
        _ = positions.withLock { $0.removeValue(forKey: channel) }
    }

    /// The stream sequence of record `seqNum`, or where a read for it may start: after the last
    /// known record when `seqNum` is beyond it. Binary search over direct gets: record `n` sits at
    /// or after stream sequence `n + 1` (every earlier record of the channel takes one before it)
    /// and at or before `last - (lastSeqNum - n)`.
    private func streamSequence(
        of seqNum: UInt64,
        in channel: ChannelAddress,
        position: Position
    ) async throws
        -> UInt64
    {
        guard position.lastStreamSequence > 0 else { return 1 }
        guard seqNum < position.nextSeqNum else { return position.lastStreamSequence + 1 }
        var low = seqNum + 1
        var high = position.lastStreamSequence - (position.nextSeqNum - 1 - seqNum)
        while low <= high {
            let middle = low + (high - low) / 2
            guard
                let message = try await nats({
                    try await jetStream.directGet(stream: stream, .nextBySubject(channel.subject, from: middle))
                }),
                let record = Self.record(message), let sequence = message.metadata?.streamSequence
            else {
                high = middle - 1
                continue
            }
            if record.seqNum == seqNum { return sequence }
            if record.seqNum < seqNum { low = sequence + 1 } else { high = middle - 1 }
        }
        return low
    }

    private func partSubject(_ channel: ChannelAddress, partId: String) -> String {
        let digest = SHA256.hash(data: Data(partId.utf8)).map { String(format: "%02x", $0) }.joined()
        return "sessions-parts.\(channel.environmentId).\(channel.friendlyId).\(channel.io.rawValue).\(digest)"
    }

    static func record(_ message: NatsMessage) -> ChannelRecord? {
        guard let seqNum = message.headers[Subjects.channelSeqHeader].flatMap(UInt64.init) else { return nil }
        return ChannelRecord(
            seqNum: seqNum,
            timestamp: (message.metadata?.timestamp ?? Date()).epochMilliseconds,
            body: String(decoding: message.payload, as: UTF8.self)
        )
    }

    /// Runs a JetStream call, turning its errors into the store's.
    private func nats<Result>(_ body: () async throws -> Result) async throws -> Result {
        do {
            return try await body()
        } catch let error as NatsError where error.jetStreamCode == NatsError.wrongLastSequence {
            throw StreamStoreError.conflict
        } catch let error as NatsError {
            throw StreamStoreError.unavailable(error.description)
        }
    }
}
