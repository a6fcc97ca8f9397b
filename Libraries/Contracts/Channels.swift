import Foundation

/// A session's two channels: `.out` (task → clients) and `.in` (clients → task).
public enum ChannelIO: String, Codable, Sendable, CaseIterable {
    case out
    case `in`
}

/// One channel of one session. Channels are keyed by the session's friendlyId, so changing its
/// externalId never moves a channel.
public struct ChannelAddress: Hashable, Codable, Sendable, CustomStringConvertible {
    public var environmentId: String
    public var friendlyId: String
    public var io: ChannelIO

    public init(environmentId: String, friendlyId: String, io: ChannelIO) {
        self.environmentId = environmentId
        self.friendlyId = friendlyId
        self.io = io
    }

    /// `sessions.{environmentId}.{friendlyId}.{io}`: where its records (or, with the S2 store,
    /// its append notifications) are published.
    public var subject: String { "sessions.\(environmentId).\(friendlyId).\(io.rawValue)" }

    /// Reads a channel subject back; nil for any other subject.
    public init?(subject: String) {
        let parts = subject.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "sessions", let io = ChannelIO(rawValue: String(parts[3])) else {
            return nil
        }
        self.init(environmentId: String(parts[1]), friendlyId: String(parts[2]), io: io)
    }

    public var description: String { "\(environmentId)/\(friendlyId)/\(io.rawValue)" }
}

/// One record of a channel as readers see it: `body` is the envelope JSON text
/// `{"data": …, "id": partId}` for records appended through the sessions API; an S2 writer's
/// records may carry headers, and bytes that are not text.
public struct ChannelRecord: Codable, Sendable, Equatable {
    public var seqNum: UInt64
    /// Milliseconds since the epoch when the record was stored.
    public var timestamp: Int64
    public var body: String
    /// S2 record headers, each `[name, value]`; a command record (`trim`) has one, named "".
    public var headers: [[String]]
    /// `body` is base64 of bytes that are not UTF-8 text (an S2 append in base64 format).
    public var isBinary: Bool

    enum CodingKeys: String, CodingKey {
        case seqNum = "seq_num"
        case timestamp, body, headers
        case isBinary = "is_binary"
    }

    public init(seqNum: UInt64, timestamp: Int64, body: String, headers: [[String]] = [], isBinary: Bool = false) {
        self.seqNum = seqNum
        self.timestamp = timestamp
        self.body = body
        self.headers = headers
        self.isBinary = isBinary
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            seqNum: try container.decode(UInt64.self, forKey: .seqNum),
            timestamp: try container.decode(Int64.self, forKey: .timestamp),
            body: try container.decode(String.self, forKey: .body),
            headers: try container.decodeIfPresent([[String]].self, forKey: .headers) ?? [],
            isBinary: try container.decodeIfPresent(Bool.self, forKey: .isBinary) ?? false
        )
    }

    /// Headers and `is_binary` only when there are any (most records have none).
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(seqNum, forKey: .seqNum)
        try container.encode(timestamp, forKey: .timestamp)
        try container.encode(body, forKey: .body)
        if !headers.isEmpty { try container.encode(headers, forKey: .headers) }
        if isBinary { try container.encode(isBinary, forKey: .isBinary) }
    }

    /// S2's measure of a record: `8 + 2 × headers + names + values + body` bytes.
    public var meteredBytes: Int { Self.meteredBytes(body: body, headers: headers, isBinary: isBinary) }

    /// ``meteredBytes`` of a record not stored yet.
    public static func meteredBytes(body: String, headers: [[String]], isBinary: Bool) -> Int {
        let bodyBytes = isBinary ? Data(base64Encoded: body)?.count ?? 0 : body.utf8.count
        return 8 + bodyBytes + headers.reduce(0) { $0 + 2 + $1.reduce(0) { $0 + $1.utf8.count } }
    }

    /// A command record (S2's `trim` or `fence`): its first header has an empty name. The
    /// service interprets it; readers skip it.
    public var isCommand: Bool { headers.first?.first == "" }

    /// The body as text: a binary one with what is not UTF-8 replaced (as S2's raw format does).
    public var text: String {
        isBinary ? String(decoding: Data(base64Encoded: body) ?? Data(), as: UTF8.self) : body
    }
}

/// `channels.read`: up to `limit` records of a channel from `fromSeqNum` on, without waiting.
public struct ReadChannelRequest: Codable, Sendable, Equatable {
    public var channel: ChannelAddress
    public var fromSeqNum: UInt64
    public var limit: Int

    public init(channel: ChannelAddress, fromSeqNum: UInt64, limit: Int = 100) {
        self.channel = channel
        self.fromSeqNum = fromSeqNum
        self.limit = limit
    }
}

/// The answer to ``ReadChannelRequest``; `nextSeqNum` is the sequence number the next appended
/// record will get.
public struct ReadChannelResponse: Codable, Sendable, Equatable {
    public var records: [ChannelRecord]
    public var nextSeqNum: UInt64

    public init(records: [ChannelRecord], nextSeqNum: UInt64) {
        self.records = records
        self.nextSeqNum = nextSeqNum
    }
}

extension Subjects {
    /// The JetStream stream with every channel's appended records, one subject per channel
    /// (``ChannelAddress/subject``), each message carrying its sequence number in
    /// ``channelSeqHeader``. With the JetStream store it is the store itself; with S2 it holds a
    /// copy of each appended record for consumers such as waitpoints.
    public static let channelStream = "SESSION_CHANNELS"
    /// Every channel subject.
    public static let allChannels = "sessions.*.*.*"
    /// The header carrying a record's dense per-channel sequence number.
    public static let channelSeqHeader = "Sessions-Seq"
    /// Request/reply: ``ReadChannelRequest`` → ``ReadChannelResponse``.
    public static let readChannel = "channels.read"
}
