import Contracts
import Crypto
import Foundation
import Nats
import ServiceKit
import Synchronization

/// Channel records in one JetStream stream, one subject per channel (``ChannelAddress/subject``).
///
/// Each message carries its dense per-channel sequence number in a header; appends set
/// expected-last-subject-sequence, so concurrent writers (in this process or another instance)
/// never fork or skip a number — a loser re-reads the tail and tries again. An append with a part
/// id first claims the channel's next position on `sessions-parts.{env}.{session}.{io}.{sha256(partId)}`,
/// then writes its record carrying the part's digest: the part is stored for the life of the
/// channel when that record follows its claim (``partState(_:in:)``). The claim is a publish of
/// its own rather than part of an atomic batch with the record: nats-server stages every atomic
/// batch of a file stream in a store of its own on disk, which costs about 5 ms and three
/// fsyncs. (Appends of several records still go in one atomic batch.)
final class JetStreamStore: StreamStore {
    let jetStream: JetStream
    let stream = Subjects.channelStream
    private let writers = KeyedLock<ChannelAddress>()
    private let positions = Mutex<[ChannelAddress: Position]>([:])
    private static let maxAttempts = 100
    /// On the first record of an append with a part id: the part's digest.
    private static let partHeader = "Sessions-Part"
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

    /// Creates the stream, or updates its configuration. Its age limit too (none): here it holds
    /// the records themselves, and one set while it held copies for the S2 store would expire them.
    func prepare() async throws {
        _ = try await jetStream.createOrUpdateStream(Self.streamConfiguration(), owningMaxAge: true)
    }

    // MARK: StreamStore

    func append(
        _ channel: ChannelAddress,
        records: [NewRecord],
        partId: String?,
        matchSeqNum: UInt64?,
        admit: @Sendable () async throws -> Void
    ) async throws
        -> AppendAck
    {
        guard (1...1000).contains(records.count) else { throw StreamStoreError.batchTooLarge }
        let part = partId.map { Part(channel, partId: $0) }
        return try await writers.withLock(channel) {
            // Admitted once the part (if any) is known not to be stored: a part written before a
            // close keeps its answer, so a client whose 200 was lost learns it was written.
            var admitted = false
            var checkedFreshPosition = false
            for _ in 0..<Self.maxAttempts {
                // The position is read before the part's claim: see ``partState(_:in:)``.
                let position = try await position(channel)
                var ack = AppendAck(
                    start: position.nextSeqNum,
                    end: position.nextSeqNum + UInt64(records.count),
                    // Never before the channel's last record: timestamps do not go back.
                    timestamp: max(Date().epochMilliseconds, position.timestamp)
                )
                var claimSequence: UInt64 = 0
                if let part {
                    switch try await partState(part, in: channel) {
                    case .unclaimed: break
                    case .written(var stored):
                        stored.isReplay = true
                        return stored
                    case .claimed(let claimed, let previous, let sequence):
                        guard position.lastStreamSequence >= previous else {
                            // Never take a claim back to an older position: read the channel's end.
                            forget(channel)
                            continue
                        }
                        // Same place, same answer, whichever of the two records lands.
                        if position.lastStreamSequence == previous { ack.timestamp = claimed.timestamp }
                        claimSequence = sequence
                    }
                }
                if !admitted {
                    try await admit()
                    admitted = true
                }
                if let matchSeqNum, matchSeqNum != position.nextSeqNum {
                    // A cached position may be behind another instance's appends: look again once.
                    guard checkedFreshPosition else {
                        forget(channel)
                        checkedFreshPosition = true
                        continue
                    }
                    throw StreamStoreError.seqNumMismatch(nextSeqNum: position.nextSeqNum)
                }
                if let part {
                    let claim = PartClaim(ack: ack, previous: position.lastStreamSequence)
                    let claimed = try await unlessConflict {
                        try await jetStream.publish(
                            part.subject,
                            payload: try JSONEncoder().encode(claim),
                            expectedLastSubjectSequence: claimSequence
                        )
                    }
                    guard claimed != nil else { continue }
                }
                let messages = try records.enumerated().map { index, record in
                    var headers = try ChannelRecord(
                        seqNum: ack.start + UInt64(index),
                        timestamp: ack.timestamp,
                        body: record.body,
                        headers: record.headers,
                        isBinary: record.isBinary
                    ).messageHeaders
                    if index == 0, let part { headers[Self.partHeader] = part.digest }
                    return JetStream.BatchMessage(
                        subject: channel.subject,
                        payload: Data(record.body.utf8),
                        headers: headers,
                        expectedLastSubjectSequence: index == 0 ? position.lastStreamSequence : nil
                    )
                }
                guard let published = try await unlessConflict({ try await jetStream.publishBatch(messages) }) else {
                    // Another writer appended first: read the channel's end again and retry.
                    forget(channel)
                    continue
                }
                remember(
                    channel,
                    Position(lastStreamSequence: published.sequence, nextSeqNum: ack.end, timestamp: ack.timestamp)
                )
                return ack
            }
            throw StreamStoreError.unavailable("too many concurrent appends to \(channel)")
        }
    }

    /// What the stream holds for a part id.
    private enum PartState {
        case unclaimed
        case written(AppendAck)
        /// Claimed at `previous` (stream sequence `sequence` on the part's subject); its record
        /// is not there: its writer stopped, is still under way, or was beaten to `previous`.
        case claimed(AppendAck, previous: UInt64, sequence: UInt64)
    }

    /// A part is written when the record right after its claim's `previous` carries the part's
    /// digest and the claim's first sequence number.
    ///
    /// A claim whose record is not there is taken over by a new claim, but only from a position
    /// at or past its `previous` (a writer whose cached position is older reads the channel's
    /// end first), so `previous` never goes back. That keeps a part from being written twice:
    /// the other writer's record expects `previous` to be the channel's last message. If
    /// something else already follows `previous`, that record can never land. If nothing does,
    /// this writer's position — read before this look — is exactly `previous`: the new claim
    /// keeps `previous`, the first sequence number and the timestamp, and JetStream stores only
    /// one of the two records, which the next look finds.
    ///
    /// The look must see every acknowledged write: it does on this single-replica stream; with
    /// replicas it would have to read from the leader (direct gets from a replica may lag).
    private func partState(_ part: Part, in channel: ChannelAddress) async throws -> PartState {
        guard
            let marker = try await nats({ try await jetStream.directGet(stream: stream, .lastBySubject(part.subject)) })
        else { return .unclaimed }
        guard let claim = PartClaim(decoding: marker.payload), let sequence = marker.metadata?.streamSequence,
            sequence > 0
        else { throw StreamStoreError.unavailable("unreadable claim on \(part.subject)") }
        guard let previous = claim.previous else { return .written(claim.ack) }
        let next = try await nats {
            try await jetStream.directGet(stream: stream, .nextBySubject(channel.subject, from: previous + 1))
        }
        if let next, next.headers[Self.partHeader] == part.digest,
            ChannelRecord(message: next)?.seqNum == claim.ack.start
        {
            return .written(claim.ack)
        }
        return .claimed(claim.ack, previous: previous, sequence: sequence)
    }

    func read(_ channel: ChannelAddress, from seqNum: UInt64, limit: Int) async throws -> [ChannelRecord] {
        let position = try await position(channel)
        let start = try await streamSequence(of: seqNum, in: channel, position: position)
        let messages = try await nats {
            try await jetStream.directGetBatch(
                stream: stream,
                subject: channel.subject,
                from: start,
                maxCount: limit,
                maxBytes: readBytes
            )
        }
        return messages.compactMap(ChannelRecord.init(message:)).filter { $0.seqNum >= seqNum }
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
                guard let record = ChannelRecord(message: message), record.seqNum >= seqNum else { continue }
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
            let record = ChannelRecord(message: last)
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
                let record = ChannelRecord(message: message), let sequence = message.metadata?.streamSequence
            else {
                high = middle - 1
                continue
            }
            if record.seqNum == seqNum { return sequence }
            if record.seqNum < seqNum { low = sequence + 1 } else { high = middle - 1 }
        }
        return low
    }

    /// A part id as the store keeps it: its SHA-256 (hex) on the first record of the append, and
    /// the subject of its claims.
    struct Part {
        let digest: String
        let subject: String

        init(_ channel: ChannelAddress, partId: String) {
            digest = SHA256.hash(data: Data(partId.utf8)).map { String(format: "%02x", $0) }.joined()
            subject = "sessions-parts.\(channel.environmentId).\(channel.friendlyId).\(channel.io.rawValue).\(digest)"
        }
    }

    /// Where the append of a part id goes: its acknowledgement, and the stream sequence of the
    /// channel's last message before it. Encoded as `{"ack":…,"previous":…}`, which versions
    /// that wrote a marker in one atomic batch with the record cannot read (so they fail rather
    /// than take a claim for a stored part). Their markers — a bare acknowledgement — decode
    /// with `previous` nil and count as written; a flat acknowledgement with `previous` is a
    /// claim (the first version of claims wrote those).
    struct PartClaim: Codable {
        var ack: AppendAck
        var previous: UInt64?

        init(ack: AppendAck, previous: UInt64?) {
            self.ack = ack
            self.previous = previous
        }

        init?(decoding payload: Data) {
            if let claim = try? JSONDecoder().decode(PartClaim.self, from: payload) {
                self = claim
            } else if let flat = try? JSONDecoder().decode(Flat.self, from: payload) {
                self.init(
                    ack: AppendAck(start: flat.start, end: flat.end, timestamp: flat.timestamp),
                    previous: flat.previous
                )
            } else {
                return nil
            }
        }

        private struct Flat: Decodable {
            var start: UInt64
            var end: UInt64
            var timestamp: Int64
            var previous: UInt64?
        }
    }

    /// Runs a JetStream write; nil when an expected last sequence did not match.
    private func unlessConflict<Result>(_ body: () async throws -> Result) async throws -> Result? {
        do {
            return try await nats(body)
        } catch StreamStoreError.conflict {
            return nil
        }
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
