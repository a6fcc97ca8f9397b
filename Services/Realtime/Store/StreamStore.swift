import Contracts

/// Where channel records are kept: dense sequence numbers from 0 per channel, appends that are
/// durable when they return, reads from any point and live follow.
protocol StreamStore: Sendable {
    /// Appends `records` as consecutive records after the channel's last one, all or none.
    ///
    /// - Parameters:
    ///   - partId: an idempotency key for the life of the channel: a second append with the same
    ///     part id writes nothing and returns the first one's acknowledgement.
    ///   - matchSeqNum: when given, the first record must get exactly this sequence number, else
    ///     ``StreamStoreError/seqNumMismatch(nextSeqNum:)``.
    ///   - admit: runs when the append's turn has come, just before it is written (appends to
    ///     one channel may queue); it throws (``AppendRefused``) to write nothing. A part already
    ///     stored is answered without it: its retry after a close still learns its seqNum.
    func append(
        _ channel: ChannelAddress,
        records: [NewRecord],
        partId: String?,
        matchSeqNum: UInt64?,
        admit: @Sendable () async throws -> Void
    ) async throws
        -> AppendAck

    /// Up to `limit` records from `seqNum` on, without waiting: fewer at the tail, or once they
    /// reach about ``readBytes`` (at least one, unless at the tail).
    func read(_ channel: ChannelAddress, from seqNum: UInt64, limit: Int) async throws -> [ChannelRecord]

    /// The sequence number the next record will get (0 for an empty channel) and the last
    /// record's timestamp.
    func tail(_ channel: ChannelAddress) async throws -> ChannelTail

    /// Every record from `seqNum` on, then each new one as it is appended, in order; ends only
    /// when cancelled or on an error.
    func follow(
        _ channel: ChannelAddress,
        from seqNum: UInt64
    ) async throws -> AsyncThrowingStream<ChannelRecord, any Error>
}

extension StreamStore {
    /// Appends records of these bodies, without headers.
    func append(
        _ channel: ChannelAddress,
        bodies: [String],
        partId: String?,
        matchSeqNum: UInt64?,
        admit: @Sendable () async throws -> Void = {}
    ) async throws
        -> AppendAck
    {
        try await append(
            channel,
            records: bodies.map { NewRecord(body: $0) },
            partId: partId,
            matchSeqNum: matchSeqNum,
            admit: admit
        )
    }
}

/// A record to append: its body and, from an S2 writer, headers and a body that is not text
/// (base64, with `isBinary`), as ``ChannelRecord`` has them.
struct NewRecord: Sendable, Equatable {
    var body: String
    var headers: [[String]] = []
    var isBinary = false
}

/// The channel takes no more records (`message` says why: the session closed or expired).
struct AppendRefused: Error {
    var message: String
}

/// About how many bytes of records one read returns at most (S2's default too), so replaying
/// large records to many subscribers does not hold hundreds of megabytes at once.
let readBytes = 1 << 20

/// An append's acknowledgement: records `start..<end` were written.
struct AppendAck: Sendable, Equatable, Codable {
    var start: UInt64
    var end: UInt64
    /// Milliseconds since the epoch.
    var timestamp: Int64
    /// True when a part id's record was there already, and nothing was written now (the
    /// acknowledgement is the same: `==` leaves this out).
    var isReplay = false

    enum CodingKeys: String, CodingKey { case start, end, timestamp }

    static func == (left: Self, right: Self) -> Bool {
        (left.start, left.end, left.timestamp) == (right.start, right.end, right.timestamp)
    }
}

/// Where a channel ends.
struct ChannelTail: Sendable, Equatable {
    var nextSeqNum: UInt64
    /// Milliseconds since the epoch of the last record; 0 when the channel is empty.
    var timestamp: Int64
}

enum StreamStoreError: Error, Equatable {
    /// `matchSeqNum` did not match; the channel's next sequence number is given.
    case seqNumMismatch(nextSeqNum: UInt64)
    /// Too many records (over 1,000) or bytes in one append.
    case batchTooLarge
    /// Another writer got there first; the store retries these itself.
    case conflict
    /// The store did not answer or refused for a reason a retry may fix.
    case unavailable(String)
}
