import Contracts
import Foundation
import Nats

/// How a channel's record travels as a JetStream message on the channel's subject
/// (``ChannelAddress/subject``): its body is the payload, the rest rides in headers. Realtime
/// writes these messages; realtime and waitpoints read them back with ``init(message:)``.
extension ChannelRecord {
    /// The record's timestamp (epoch ms), the one its append answered; records written before it
    /// existed have JetStream's time instead.
    static let timestampHeader = "Sessions-Timestamp"
    /// An S2 record's headers: base64 of their JSON (`[[name, value], …]`), so any text fits.
    static let headersHeader = "Sessions-Record-Headers"
    /// On a record whose payload is base64 of bytes that are not text (``isBinary``).
    static let binaryHeader = "Sessions-Body-Encoding"
    /// The most bytes a record's headers may take as JSON: JetStream keeps all of a message's
    /// headers within 64 KiB, and these ride there as base64 (a third longer) beside the rest.
    public static let maxHeadersJSONBytes = 46 * 1024

    /// How many bytes `headers` take as JSON (``maxHeadersJSONBytes``).
    public static func headersJSONBytes(_ headers: [[String]]) throws -> Int {
        headers.isEmpty ? 0 : try JSONEncoder().encode(headers).count
    }

    /// The headers a message of this record carries.
    public var messageHeaders: [String: String] {
        get throws {
            var headers = [Subjects.channelSeqHeader: String(seqNum), Self.timestampHeader: String(timestamp)]
            if !self.headers.isEmpty {
                headers[Self.headersHeader] = try JSONEncoder().encode(self.headers).base64EncodedString()
            }
            if isBinary { headers[Self.binaryHeader] = "base64" }
            return headers
        }
    }

    /// The record a channel message holds; nil for a message without a sequence number.
    public init?(message: NatsMessage) {
        guard let seqNum = message.headers[Subjects.channelSeqHeader].flatMap(UInt64.init) else { return nil }
        self.init(
            seqNum: seqNum,
            timestamp: message.headers[Self.timestampHeader].flatMap(Int64.init)
                ?? (message.metadata?.timestamp ?? Date()).epochMilliseconds,
            body: String(decoding: message.payload, as: UTF8.self),
            headers: message.headers[Self.headersHeader].flatMap { Data(base64Encoded: $0) }
                .flatMap { try? JSONDecoder().decode([[String]].self, from: $0) } ?? [],
            isBinary: message.headers[Self.binaryHeader] == "base64"
        )
    }
}
