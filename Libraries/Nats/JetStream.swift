internal import CNats
import Contracts
import Foundation

/// JetStream on a ``NatsConnection``: stream management, publish with ack, direct get, ordered
/// consumers and durable pull consumers.
///
/// Publish, stream management and direct get are plain requests to the JetStream API, so they
/// block no thread; consumers use cnats' JetStream context (`jsCtx`).
/// `@unchecked Sendable`: a `jsCtx` is thread-safe in cnats.
public final class JetStream: @unchecked Sendable {
    public let connection: NatsConnection
    let context: OpaquePointer
    private let timeout: Duration

    /// - Parameter timeout: how long a JetStream API request may take. Default 5 s.
    public init(connection: NatsConnection, timeout: Duration = .seconds(5)) throws {
        var options = jsOptions()
        jsOptions_Init(&options)
        options.Wait = Int64(timeout.components.seconds * 1000)
        var context: OpaquePointer?
        let status = natsConnection_JetStream(&context, connection.raw, &options)
        guard status == NATS_OK, let context else { throw NatsError(status: status) }
        self.connection = connection
        self.context = context
        self.timeout = timeout
    }

    deinit { jsCtx_Destroy(context) }

    // MARK: Streams

    /// Creates the stream; when it exists, brings what the code owns (subjects, duplicate
    /// window, direct and atomic access, and `max_age` when `owningMaxAge`) up to date and keeps
    /// everything else as it is — replicas, limits, placement: what operators tune (`nats stream
    /// edit`) survives a restart. Nothing is written when the owned settings already match.
    @discardableResult
    public func createOrUpdateStream(
        _ configuration: StreamConfiguration,
        owningMaxAge: Bool = false
    ) async throws -> StreamInfo {
        do {
            return try await api("$JS.API.STREAM.CREATE.\(configuration.name)", configuration)
        } catch let error as NatsError where error.jetStreamCode == 10058 {
            let infoSubject = "$JS.API.STREAM.INFO.\(configuration.name)"
            let reply = try await connection.request(infoSubject, payload: Data(), timeout: timeout)
            let info = try Self.decode(StreamInfo.self, from: reply, subject: infoSubject)
            let owned = StreamConfiguration.Owned(configuration, maxAge: owningMaxAge)
            guard StreamConfiguration.Owned(info.config, maxAge: owningMaxAge) != owned else { return info }
            // Untyped, so that fields this code does not know are sent back as they are.
            guard
                var merged = (try JSONSerialization.jsonObject(with: reply.payload) as? [String: Any])?["config"]
                    as? [String: Any],
                let wanted = try JSONSerialization.jsonObject(with: JSONEncoder().encode(configuration))
                    as? [String: Any]
            else { throw NatsError(.jetStream, message: "unreadable configuration of stream \(configuration.name)") }
            for key in owned.keys { merged[key] = wanted[key] }
            let updateSubject = "$JS.API.STREAM.UPDATE.\(configuration.name)"
            let updated = try await connection.request(
                updateSubject,
                payload: try JSONSerialization.data(withJSONObject: merged),
                timeout: timeout
            )
            return try Self.decode(StreamInfo.self, from: updated, subject: updateSubject)
        }
    }

    /// The stream's configuration and state.
    public func streamInfo(_ name: String) async throws -> StreamInfo {
        try await api("$JS.API.STREAM.INFO.\(name)", Optional<StreamConfiguration>.none)
    }

    /// How far a durable consumer is behind: messages not yet delivered to it, and those
    /// delivered but not yet acknowledged.
    public func consumerBacklog(stream: String, consumer: String) async throws -> ConsumerBacklog {
        try await api("$JS.API.CONSUMER.INFO.\(stream).\(consumer)", Optional<StreamConfiguration>.none)
    }

    /// Deletes the stream and its messages.
    public func deleteStream(_ name: String) async throws {
        let _: DeleteResponse = try await api("$JS.API.STREAM.DELETE.\(name)", Optional<StreamConfiguration>.none)
    }

    /// Checks that JetStream answers for this account; used by readiness probes.
    public func ping() async throws {
        let _: AccountInfo = try await api("$JS.API.INFO", Optional<StreamConfiguration>.none)
    }

    // MARK: Publish

    /// Publishes and waits until the stream has stored the message.
    ///
    /// - Parameters:
    ///   - messageID: `Nats-Msg-Id`; a second publish with the same id within the stream's
    ///     duplicate window is not stored again (``PublishAck/duplicate`` is true).
    ///   - expectedLastSubjectSequence: the stream sequence of the subject's last message, or 0
    ///     when the subject must still be empty; a mismatch throws `NatsError` with
    ///     `jetStreamCode == NatsError.wrongLastSequence`.
    public func publish(
        _ subject: String,
        payload: Data,
        headers: [String: String] = [:],
        messageID: String? = nil,
        expectedLastSubjectSequence: UInt64? = nil
    ) async throws -> PublishAck {
        var headers = headers
        if let messageID { headers["Nats-Msg-Id"] = messageID }
        if let expected = expectedLastSubjectSequence {
            // Set as a header so that 0 ("no message yet") is sent too; cnats' option treats 0 as unset.
            headers["Nats-Expected-Last-Subject-Sequence"] = String(expected)
        }
        let reply = try await connection.request(subject, payload: payload, headers: headers, timeout: timeout)
        // Read without JSONDecoder when the usual flat acknowledgement: it is on the path of
        // every append, and the decoder took about 45 µs of the ~0.8 ms it waits for the ack.
        if reply.status == nil, let ack = PublishAck(flat: reply.payload) { return ack }
        return try Self.decode(PublishAck.self, from: reply, subject: subject)
    }

    /// One message of an atomic batch.
    public struct BatchMessage: Sendable {
        public var subject: String
        public var payload: Data
        public var headers: [String: String]
        /// Like ``JetStream/publish(_:payload:headers:messageID:expectedLastSubjectSequence:)``'s:
        /// the whole batch is refused when it does not match.
        public var expectedLastSubjectSequence: UInt64?

        public init(
            subject: String,
            payload: Data,
            headers: [String: String] = [:],
            expectedLastSubjectSequence: UInt64? = nil
        ) {
            self.subject = subject
            self.payload = payload
            self.headers = headers
            self.expectedLastSubjectSequence = expectedLastSubjectSequence
        }
    }

    /// Publishes up to 1,000 messages that the stream stores all together or not at all, in
    /// order and with consecutive stream sequences (the stream needs `allowAtomic`). The
    /// acknowledgement carries the sequence of the last message.
    ///
    /// One message goes out as a plain publish: atomic by itself, without the batch's staging
    /// (nats-server stages a file stream's batch on disk, a few fsyncs). So a message id JetStream
    /// already has comes back as a duplicate, where a batch of several is refused.
    public func publishBatch(_ messages: [BatchMessage]) async throws -> PublishAck {
        precondition(!messages.isEmpty && messages.count <= 1000, "an atomic batch holds 1 to 1,000 messages")
        if messages.count == 1, let only = messages.first {
            return try await publish(
                only.subject,
                payload: only.payload,
                headers: only.headers,
                expectedLastSubjectSequence: only.expectedLastSubjectSequence
            )
        }
        let batchID = UUID().uuidString
        for (index, message) in messages.enumerated() {
            var headers = message.headers
            headers["Nats-Batch-Id"] = batchID
            headers["Nats-Batch-Sequence"] = String(index + 1)
            if let expected = message.expectedLastSubjectSequence {
                headers["Nats-Expected-Last-Subject-Sequence"] = String(expected)
            }
            if index == messages.count - 1 {
                headers["Nats-Batch-Commit"] = "1"
                let reply = try await connection.request(
                    message.subject,
                    payload: message.payload,
                    headers: headers,
                    timeout: timeout
                )
                return try Self.decode(PublishAck.self, from: reply, subject: message.subject)
            }
            // Only the commit asks for a reply; messages of one connection reach the server in order.
            try connection.publish(message.subject, payload: message.payload, headers: headers)
        }
        preconditionFailure("unreachable: the last message commits")
    }

    // MARK: Direct get

    /// Which message ``directGet(stream:_:)`` reads.
    public enum DirectGet: Sendable {
        /// The message with this stream sequence.
        case sequence(UInt64)
        /// The last message on the subject.
        case lastBySubject(String)
        /// The first message on the subject at or after the stream sequence.
        case nextBySubject(String, from: UInt64)
    }

    /// Reads one message straight from the stream (the stream needs `allowDirect`); nil when
    /// there is none.
    public func directGet(stream: String, _ query: DirectGet) async throws -> NatsMessage? {
        let body: [String: JSONValue] =
            switch query {
            case .sequence(let sequence): ["seq": .number(sequence)]
            case .lastBySubject(let subject): ["last_by_subj": .string(subject)]
            case .nextBySubject(let subject, let from): ["seq": .number(from), "next_by_subj": .string(subject)]
            }
        let reply = try await connection.request(
            "$JS.API.DIRECT.GET.\(stream)",
            payload: try JSONEncoder().encode(body),
            timeout: timeout
        )
        switch reply.status {
        case nil: return Self.directMessage(reply, stream: stream)
        case 404: return nil
        default:
            throw NatsError(
                .jetStream,
                message: "direct get failed: \(reply.headers["Description"] ?? "status \(reply.status!)")"
            )
        }
    }

    /// Reads up to `maxCount` messages on `subject` from stream sequence `from` on, in one
    /// request (batch direct get; nats-server 2.11+, the stream needs `allowDirect`); with
    /// `maxBytes`, the server stops once the batch reaches about that size.
    public func directGetBatch(
        stream: String,
        subject: String,
        from: UInt64,
        maxCount: Int,
        maxBytes: Int? = nil
    ) async throws -> [NatsMessage] {
        let inbox = "_INBOX.\(UUID().uuidString)"
        let replies = try connection.subscribe(inbox)
        defer { replies.unsubscribe() }
        var body: [String: JSONValue] = [
            "seq": .number(max(from, 1)), "next_by_subj": .string(subject), "batch": .number(UInt64(maxCount)),
        ]
        if let maxBytes { body["max_bytes"] = .number(UInt64(maxBytes)) }
        try connection.publish(
            "$JS.API.DIRECT.GET.\(stream)",
            payload: try JSONEncoder().encode(body),
            replySubject: inbox
        )
        let timeout = self.timeout
        return try await withThrowingTaskGroup(of: [NatsMessage]?.self) { group in
            group.addTask {
                var messages: [NatsMessage] = []
                for await reply in replies {
                    switch reply.status {
                    case nil: messages.append(Self.directMessage(reply, stream: stream))
                    case 204, 404: return messages
                    default:
                        throw NatsError(
                            .jetStream,
                            message: "direct get failed: \(reply.headers["Description"] ?? "status \(reply.status!)")"
                        )
                    }
                    if messages.count == maxCount { return messages }
                }
                throw NatsError(.closed, message: "the connection closed during a direct get")
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let messages = try await group.next() ?? nil else {
                throw NatsError(.timeout, message: "no complete direct get reply from \(stream) within \(timeout)")
            }
            return messages
        }
    }

    static func directMessage(_ reply: NatsMessage, stream: String) -> NatsMessage {
        var message = reply
        message.subject = reply.headers["Nats-Subject"] ?? reply.subject
        message.metadata = JetStreamMetadata(
            stream: reply.headers["Nats-Stream"] ?? stream,
            streamSequence: UInt64(reply.headers["Nats-Sequence"] ?? "") ?? 0,
            timestamp: reply.headers["Nats-Time-Stamp"].flatMap(JetStreamMetadata.parseTimestamp) ?? Date(),
            deliveries: 1,
            pending: UInt64(reply.headers["Nats-Num-Pending"] ?? "") ?? 0
        )
        return message
    }

    // MARK: API plumbing

    func api<Body: Encodable, Response: Decodable>(_ subject: String, _ body: Body?) async throws -> Response {
        let payload = try body.map { try JSONEncoder().encode($0) } ?? Data()
        let reply = try await connection.request(subject, payload: payload, timeout: timeout)
        return try Self.decode(Response.self, from: reply, subject: subject)
    }

    private static let errorKey = Data("\"error\"".utf8)

    static func decode<Response: Decodable>(
        _ type: Response.Type,
        from reply: NatsMessage,
        subject: String
    ) throws
        -> Response
    {
        if reply.status == 503 {
            throw NatsError(.noResponders, message: "JetStream is not enabled or not reachable for \(subject)")
        }
        // Most replies are not errors: decoded as one only when the key is there.
        if reply.payload.range(of: Self.errorKey) != nil,
            let failure = try? JSONDecoder().decode(APIErrorResponse.self, from: reply.payload),
            let error = failure.error
        {
            let code: NatsError.Code = error.code == 404 ? .notFound : .jetStream
            throw NatsError(code, jetStreamCode: error.errCode, message: error.description)
        }
        do {
            return try JSONDecoder().decode(Response.self, from: reply.payload)
        } catch {
            throw NatsError(.jetStream, message: "unreadable JetStream reply on \(subject): \(error)")
        }
    }
}

/// The acknowledgement of a stored message.
public struct PublishAck: Decodable, Sendable, Equatable {
    public var stream: String
    /// The message's sequence in the stream.
    public var sequence: UInt64
    /// True when the message id was seen before and nothing new was stored.
    public var duplicate: Bool

    enum CodingKeys: String, CodingKey {
        case stream, duplicate
        case sequence = "seq"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        stream = try container.decode(String.self, forKey: .stream)
        sequence = try container.decode(UInt64.self, forKey: .sequence)
        duplicate = try container.decodeIfPresent(Bool.self, forKey: .duplicate) ?? false
    }
}

extension PublishAck {
    init(stream: String, sequence: UInt64, duplicate: Bool) {
        self.stream = stream
        self.sequence = sequence
        self.duplicate = duplicate
    }

    /// Reads the acknowledgement nats-server sends, `{"stream":"s","seq":7}` with perhaps
    /// `"domain"` and `"duplicate": true`: a flat object of unescaped strings, integers and
    /// booleans, with blanks between tokens.
    /// Nil for anything else (an error, an escape, a nested value), which JSONDecoder then reads.
    init?(flat payload: Data) {
        var stream: String?
        var sequence: UInt64?
        var duplicate = false
        let bytes = [UInt8](payload)
        var index = 0
        /// Passes `byte`, and the blanks before it.
        func skip(_ byte: UInt8) -> Bool {
            while index < bytes.count, bytes[index] == UInt8(ascii: " ") { index += 1 }
            guard index < bytes.count, bytes[index] == byte else { return false }
            index += 1
            return true
        }
        /// A string without escapes or control characters, after its opening quote.
        func string() -> String? {
            guard let end = bytes[index...].firstIndex(of: UInt8(ascii: "\"")),
                !bytes[index..<end].contains(where: { $0 == UInt8(ascii: "\\") || $0 < 0x20 })
            else { return nil }
            defer { index = end + 1 }
            return String(decoding: bytes[index..<end], as: UTF8.self)
        }
        guard skip(UInt8(ascii: "{")) else { return nil }
        repeat {
            guard skip(UInt8(ascii: "\"")), let key = string(), skip(UInt8(ascii: ":")) else { return nil }
            if skip(UInt8(ascii: "\"")) {
                guard let value = string() else { return nil }
                if key == "stream" { stream = value }
            } else {
                let start = index
                while index < bytes.count, bytes[index] != UInt8(ascii: ","), bytes[index] != UInt8(ascii: "}") {
                    index += 1
                }
                let value = String(decoding: bytes[start..<index], as: UTF8.self).trimmingCharacters(in: .whitespaces)
                let isBoolean = value == "true" || value == "false"
                // JSON's integers: digits, no sign, no leading zero.
                let isNumber =
                    !value.isEmpty && value.allSatisfy { ("0"..."9").contains($0) }
                    && (value == "0" || value.first != "0")
                guard isBoolean || isNumber else { return nil }
                switch key {
                case "seq":
                    guard isNumber, let value = UInt64(value) else { return nil }
                    sequence = value
                case "duplicate":
                    guard isBoolean else { return nil }
                    duplicate = value == "true"
                default: break
                }
            }
        } while skip(UInt8(ascii: ","))
        guard skip(UInt8(ascii: "}")), index == bytes.count, let stream, let sequence else { return nil }
        self.init(stream: stream, sequence: sequence, duplicate: duplicate)
    }
}

/// Where a JetStream message sits in its stream.
public struct JetStreamMetadata: Sendable, Equatable {
    public var stream: String
    public var streamSequence: UInt64
    /// When the stream stored it, in whole milliseconds.
    public var timestamp: Date
    /// How many times this message was delivered to this consumer (1 = first time).
    public var deliveries: UInt64
    /// Messages still to come after this one, as the server counted when it sent it.
    public var pending: UInt64

    static func parseTimestamp(_ text: String) -> Date? { ISO8601.date(from: text) }
}

/// A stream's configuration, as the JetStream API takes it (durations in nanoseconds).
public struct StreamConfiguration: Codable, Sendable, Equatable {
    public var name: String
    public var subjects: [String]
    /// `file` or `memory`. Default `file`.
    public var storage: String
    /// `limits`, `interest` or `workqueue`. Default `limits`.
    public var retention: String
    /// How long a message id is remembered for deduplication. Default 2 minutes.
    public var duplicateWindow: Int64
    /// Lets readers fetch messages without a consumer (direct get). Default true.
    public var allowDirect: Bool
    /// Messages older than this are removed; 0 keeps them forever. Default 0.
    public var maxAge: Int64
    public var numReplicas: Int
    /// Accepts atomic batches (``JetStream/publishBatch(_:)``; nats-server 2.12+). Default false.
    public var allowAtomic: Bool?

    enum CodingKeys: String, CodingKey {
        case name, subjects, storage, retention
        case duplicateWindow = "duplicate_window"
        case allowDirect = "allow_direct"
        case allowAtomic = "allow_atomic"
        case maxAge = "max_age"
        case numReplicas = "num_replicas"
    }

    /// What ``JetStream/createOrUpdateStream(_:owningMaxAge:)`` keeps up to date on an existing
    /// stream; the rest (storage, retention, replicas, limits) is set when the stream is created.
    struct Owned: Equatable {
        var subjects: [String]
        var duplicateWindow: Int64
        var allowDirect: Bool
        var allowAtomic: Bool
        var maxAge: Int64?

        init(_ configuration: StreamConfiguration, maxAge owningMaxAge: Bool) {
            subjects = configuration.subjects
            duplicateWindow = configuration.duplicateWindow
            allowDirect = configuration.allowDirect
            allowAtomic = configuration.allowAtomic ?? false
            maxAge = owningMaxAge ? configuration.maxAge : nil
        }

        var keys: [String] {
            [CodingKeys.subjects, .duplicateWindow, .allowDirect, .allowAtomic].map(\.rawValue)
                + (maxAge == nil ? [] : [CodingKeys.maxAge.rawValue])
        }
    }

    public init(
        name: String,
        subjects: [String],
        storage: String = "file",
        retention: String = "limits",
        duplicateWindow: Duration = .seconds(120),
        allowDirect: Bool = true,
        maxAge: Duration = .zero,
        numReplicas: Int = 1,
        allowAtomic: Bool = false
    ) {
        self.allowAtomic = allowAtomic
        self.name = name
        self.subjects = subjects
        self.storage = storage
        self.retention = retention
        self.duplicateWindow = duplicateWindow.nanoseconds
        self.allowDirect = allowDirect
        self.maxAge = maxAge.nanoseconds
        self.numReplicas = numReplicas
    }
}

/// A durable consumer's backlog (``JetStream/consumerBacklog(stream:consumer:)``).
public struct ConsumerBacklog: Decodable, Sendable, Equatable {
    /// Stored messages not yet delivered.
    public var pending: UInt64
    /// Delivered, not yet acknowledged.
    public var unacknowledged: UInt64

    public init(pending: UInt64, unacknowledged: UInt64) {
        self.pending = pending
        self.unacknowledged = unacknowledged
    }

    enum CodingKeys: String, CodingKey {
        case pending = "num_pending"
        case unacknowledged = "num_ack_pending"
    }
}

/// A stream's configuration and state.
public struct StreamInfo: Decodable, Sendable {
    public struct State: Decodable, Sendable {
        public var messages: UInt64
        public var bytes: UInt64
        public var firstSeq: UInt64
        public var lastSeq: UInt64

        enum CodingKeys: String, CodingKey {
            case messages, bytes
            case firstSeq = "first_seq"
            case lastSeq = "last_seq"
        }
    }

    public var config: StreamConfiguration
    public var state: State
}

private struct AccountInfo: Decodable {
    var streams: Int?
}

private struct DeleteResponse: Decodable {
    var success: Bool
}

private struct APIErrorResponse: Decodable {
    struct APIError: Decodable {
        var code: Int
        var errCode: Int?
        var description: String

        enum CodingKeys: String, CodingKey {
            case code, description
            case errCode = "err_code"
        }
    }
    var error: APIError?
}

private enum JSONValue: Encodable {
    case string(String)
    case number(UInt64)

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }
}
