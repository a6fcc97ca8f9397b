import Contracts
import Foundation
import HTTPClient
import Logging
import Synchronization

/// Channel records in S2 (s2.dev, s2-lite, or any server speaking S2's REST API: JSON appends
/// and reads, SSE follow), over libcurl. S2 keeps the dense sequence numbers and durability;
/// a channel's stream is made by its first append, with the configured retention (S2's own
/// default would drop records after 7 days); appends with a part id use `match_seq_num` after looking for the part id among the channel's
/// last `partIdWindow` records, so a retry within that window writes nothing (S2 has no append
/// idempotency key of its own).
final class S2Store: StreamStore {
    struct Settings: Sendable {
        /// The basin's data plane, up to and including `/v1` (`https://{basin}.b.s2.dev/v1`).
        var endpoint: String
        var basin: String
        /// Put before `sessions/{friendlyId}/{io}` in stream names.
        var streamPrefix: String = ""
        /// How many of a channel's latest records a part id is looked for in.
        var partIdWindow: Int = 1000
        /// A follow that hears nothing from S2 this long, not even a ping, reconnects (a
        /// connection gone half-open would otherwise wait for ever).
        var silenceLimit: Duration = .seconds(30)
        /// How long the streams this store makes keep records: for ever when nil (as the JetStream
        /// store does), else this many seconds.
        var retentionSeconds: Int? = nil
    }

    let settings: Settings
    let http: HTTPClient
    /// The bearer token for a channel's stream.
    let credentials: @Sendable (ChannelAddress) async throws -> String
    let logger: Logger
    private static let maxAttempts = 50

    init(
        settings: Settings,
        http: HTTPClient,
        logger: Logger,
        credentials: @escaping @Sendable (ChannelAddress) async throws -> String
    ) {
        self.settings = settings
        self.http = http
        self.logger = logger
        self.credentials = credentials
    }

    func streamName(_ channel: ChannelAddress) -> String {
        settings.streamPrefix + "sessions/\(channel.friendlyId)/\(channel.io.rawValue)"
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
        // S2 orders a channel's appends itself: nothing queues here.
        guard let partId else {
            try await admit()
            return try await post(channel, records: records, matchSeqNum: matchSeqNum)
        }
        var next = try await tail(channel).nextSeqNum
        // Records below this were looked through already: after a lost race only the new ones are.
        var looked = next - min(next, UInt64(settings.partIdWindow))
        // Admitted once the part is known not to be stored: a part written before a close keeps
        // its answer.
        var admitted = false
        for _ in 0..<Self.maxAttempts {
            if let existing = try await record(channel, partId: partId, in: min(looked, next)..<next) {
                return AppendAck(
                    start: existing.seqNum,
                    end: existing.seqNum + 1,
                    timestamp: existing.timestamp,
                    isReplay: true
                )
            }
            if !admitted {
                try await admit()
                admitted = true
            }
            looked = max(looked, next)
            if let matchSeqNum, matchSeqNum != next {
                throw StreamStoreError.seqNumMismatch(nextSeqNum: next)
            }
            do {
                return try await post(channel, records: records, matchSeqNum: next)
            } catch StreamStoreError.seqNumMismatch(let actual) {
                next = actual  // Someone appended since the look: look at what they appended.
            }
        }
        throw StreamStoreError.unavailable("too many concurrent appends to \(channel)")
    }

    func read(_ channel: ChannelAddress, from seqNum: UInt64, limit: Int) async throws -> [ChannelRecord] {
        let response = try await send(
            channel,
            path: "/records?seq_num=\(seqNum)&count=\(min(limit, 1000))&clamp=true",
            accept: "application/json",
            format: "base64"
        )
        switch response.status {
        case 200: return try decode(ReadBatch.self, response).records.map(\.record)
        case 416: return []
        case 404 where Self.isStreamMissing(response.body): return []
        default: throw failure(response)
        }
    }

    func tail(_ channel: ChannelAddress) async throws -> ChannelTail {
        let response = try await send(channel, path: "/records/tail", accept: "application/json")
        switch response.status {
        case 200:
            let tail = try decode(TailBody.self, response).tail
            return ChannelTail(nextSeqNum: tail.seqNum, timestamp: tail.timestamp)
        case 404 where Self.isStreamMissing(response.body): return ChannelTail(nextSeqNum: 0, timestamp: 0)
        default: throw failure(response)
        }
    }

    func follow(
        _ channel: ChannelAddress,
        from seqNum: UInt64
    ) async throws -> AsyncThrowingStream<
        ChannelRecord, any Error
    > {
        let (records, continuation) = AsyncThrowingStream<ChannelRecord, any Error>.makeStream()
        let task = Task {
            var next = seqNum
            var backoff = Duration.milliseconds(100)
            while !Task.isCancelled {
                let session = FollowSession(from: next)
                do {
                    // S2 ends a session after `wait` idle or on its own terms: reconnect from `next`.
                    let response = try await http.stream(
                        HTTPRequest(
                            url: url(channel, "/records?seq_num=\(next)&clamp=true&wait=60"),
                            headers: try await headers(channel, accept: "text/event-stream", format: "base64"),
                            timeout: .seconds(10)
                        )
                    )
                    guard response.status == 200 else {
                        let answer = try await Self.collect(response.body, upTo: 64 * 1024)
                        if response.status == 404 && Self.isStreamMissing(answer) {
                            // No stream yet: its first append makes it. Look again soon.
                            try? await Task.sleep(for: .milliseconds(250))
                            continue
                        }
                        throw failure(HTTPResponse(status: response.status, headers: response.headers, body: answer))
                    }
                    try await readSession(response.body, into: continuation, session)
                } catch {
                    if Task.isCancelled { break }
                    logger.warning(
                        "An S2 read session failed; reconnecting.",
                        metadata: ["channel": "\(channel)", "error": "\(error)"]
                    )
                    try? await Task.sleep(for: session.next > next ? .milliseconds(100) : backoff)
                    backoff = session.next > next ? .milliseconds(200) : min(backoff * 2, .seconds(5))
                }
                next = session.next
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return records
    }

    /// Hands one SSE read session's records to `continuation`, from `session.next` on, moving
    /// it on. Throws when S2 sends nothing, not even a ping, for `silenceLimit`.
    private func readSession(
        _ body: AsyncThrowingStream<Data, any Error>,
        into continuation: AsyncThrowingStream<ChannelRecord, any Error>.Continuation,
        _ session: FollowSession
    ) async throws {
        let silenceLimit = settings.silenceLimit
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                var parser = ServerSentEventParser()
                for try await chunk in body {
                    session.heard()
                    for event in parser.feed(chunk) {
                        switch event.event {
                        case "batch":
                            let batch = try JSONDecoder().decode(ReadBatch.self, from: Data(event.data.utf8))
                            for record in batch.records.map(\.record) where record.seqNum >= session.next {
                                continuation.yield(record)
                                session.reached(record.seqNum + 1)
                            }
                        case "error":
                            throw StreamStoreError.unavailable("S2 read failed: \(event.data)")
                        default: break
                        }
                    }
                }
            }
            group.addTask {
                while true {
                    try await Task.sleep(for: silenceLimit / 4)
                    guard session.silence < silenceLimit else {
                        throw StreamStoreError.unavailable("S2 sent nothing for \(silenceLimit)")
                    }
                }
            }
            // The body ended, or either failed: the other stops (the body's transfer with it).
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    // MARK: HTTP

    /// Appends; a channel without a stream gets one first.
    private func post(_ channel: ChannelAddress, records: [NewRecord], matchSeqNum: UInt64?) async throws -> AppendAck {
        // Bytes that are not text go in S2's base64 format, with everything else of the append.
        let base64 = records.contains(where: \.isBinary)
        func encoded(_ text: String, binary: Bool = false) -> String {
            base64 && !binary ? Data(text.utf8).base64EncodedString() : text
        }
        let input = try JSONEncoder().encode(
            AppendInput(
                records: records.map { record in
                    .init(
                        body: encoded(record.body, binary: record.isBinary),
                        headers: record.headers.isEmpty ? nil : record.headers.map { $0.map { encoded($0) } }
                    )
                },
                matchSeqNum: matchSeqNum
            )
        )
        var madeStream = false
        while true {
            let response = try await send(
                channel,
                method: "POST",
                path: "/records",
                accept: "application/json",
                format: base64 ? "base64" : nil,
                body: input
            )
            switch response.status {
            case 200:
                let ack = try decode(AppendOutput.self, response)
                return AppendAck(start: ack.start.seqNum, end: ack.end.seqNum, timestamp: ack.start.timestamp)
            case 412:
                let mismatch = try decode(Mismatch.self, response)
                guard let next = mismatch.seqNumMismatch else { throw failure(response) }
                throw StreamStoreError.seqNumMismatch(nextSeqNum: next)
            case 404 where !madeStream && Self.isStreamMissing(response.body):
                try await makeStream(channel)
                madeStream = true
            default: throw failure(response)
            }
        }
    }

    /// Creates the channel's stream with this store's retention; one made meanwhile by another
    /// writer (409) will do.
    private func makeStream(_ channel: ChannelAddress) async throws {
        let retention: RetentionPolicy = settings.retentionSeconds.map { .age($0) } ?? .infinite
        let response = try await send(
            channel,
            method: "POST",
            url: settings.endpoint + "/streams",
            accept: "application/json",
            body: try JSONEncoder().encode(
                CreateStream(stream: streamName(channel), config: .init(retentionPolicy: retention))
            )
        )
        switch response.status {
        case 200, 201:
            logger.info("Made an S2 stream.", metadata: ["s2.stream": "\(streamName(channel))"])
        case 409 where Self.code(of: response.body) == "resource_already_exists": break
        default: throw failure(response)
        }
    }

    /// The record with envelope id `partId` (compared byte for byte) among `range`, if any.
    private func record(
        _ channel: ChannelAddress,
        partId: String,
        in range: Range<UInt64>
    ) async throws
        -> ChannelRecord?
    {
        var next = range.lowerBound
        while next < range.upperBound {
            let records = try await read(channel, from: next, limit: 1000)
            guard let last = records.last else { return nil }
            if let match = records.first(where: { Envelope.id(of: $0.body)?.utf8.elementsEqual(partId.utf8) == true }) {
                return match
            }
            next = last.seqNum + 1
        }
        return nil
    }

    /// Sends a request about `channel`'s stream: to `path` under it, or to `url`.
    private func send(
        _ channel: ChannelAddress,
        method: String = "GET",
        path: String = "",
        url: String? = nil,
        accept: String,
        format: String? = nil,
        body: Data? = nil
    ) async throws -> HTTPResponse {
        do {
            return try await http.execute(
                HTTPRequest(
                    method: method,
                    url: url ?? self.url(channel, path),
                    headers: try await headers(channel, accept: accept, format: format ?? "raw"),
                    body: body,
                    timeout: .seconds(10)
                )
            )
        } catch let error as HTTPClientError {
            throw StreamStoreError.unavailable("S2 is unreachable: \(error)")
        }
    }

    private func url(_ channel: ChannelAddress, _ path: String) -> String {
        let name = streamName(channel).addingPercentEncoding(withAllowedCharacters: Self.unreserved) ?? ""
        return settings.endpoint + "/streams/" + name + path
    }

    private func headers(_ channel: ChannelAddress, accept: String, format: String = "raw") async throws -> HTTPHeaders
    {
        [
            "Authorization": "Bearer \(try await credentials(channel))",
            "S2-Basin": settings.basin,
            "S2-Format": format,
            "Accept": accept,
            "Content-Type": "application/json",
        ]
    }

    private func decode<Body: Decodable>(_ type: Body.Type, _ response: HTTPResponse) throws -> Body {
        do {
            return try JSONDecoder().decode(type, from: response.body)
        } catch {
            throw StreamStoreError.unavailable("unreadable S2 answer (\(response.status))")
        }
    }

    private func failure(_ response: HTTPResponse) -> StreamStoreError {
        let error = try? JSONDecoder().decode(ErrorBody.self, from: response.body)
        return .unavailable("S2 answered \(response.status) \(error?.code ?? ""): \(error?.message ?? "")")
    }

    private static func code(of body: Data) -> String? {
        (try? JSONDecoder().decode(ErrorBody.self, from: body))?.code
    }

    /// Whether a 404 says the stream is not made yet, which reads as an empty channel. Any other
    /// 404 (no such basin, a wrong endpoint) is a failure: reading it as empty would hide it.
    private static func isStreamMissing(_ body: Data) -> Bool { code(of: body) == "stream_not_found" }

    private static func collect(_ body: AsyncThrowingStream<Data, any Error>, upTo limit: Int) async throws -> Data {
        var data = Data()
        for try await chunk in body {
            data += chunk
            if data.count >= limit { break }
        }
        return data
    }

    /// RFC 3986's unreserved characters, ASCII only (`alphanumerics` would let other letters
    /// through unencoded).
    private static let unreserved = CharacterSet(
        charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    )

    // MARK: Wire types

    private struct AppendInput: Encodable {
        struct Record: Encodable {
            var body: String
            var headers: [[String]]?
        }
        var records: [Record]
        var matchSeqNum: UInt64?

        enum CodingKeys: String, CodingKey {
            case records
            case matchSeqNum = "match_seq_num"
        }
    }

    private struct Position: Decodable {
        var seqNum: UInt64
        var timestamp: Int64

        enum CodingKeys: String, CodingKey {
            case seqNum = "seq_num"
            case timestamp
        }
    }

    private struct CreateStream: Encodable {
        struct Config: Encodable {
            var retentionPolicy: RetentionPolicy
            enum CodingKeys: String, CodingKey { case retentionPolicy = "retention_policy" }
        }
        var stream: String
        var config: Config
    }

    /// `{"infinite":{}}` or `{"age":seconds}`.
    private enum RetentionPolicy: Encodable {
        case infinite
        case age(Int)

        private struct Empty: Encodable {}
        enum CodingKeys: String, CodingKey { case infinite, age }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            switch self {
            case .infinite: try container.encode(Empty(), forKey: .infinite)
            case .age(let seconds): try container.encode(seconds, forKey: .age)
            }
        }
    }

    private struct AppendOutput: Decodable {
        var start: Position
        var end: Position
    }

    private struct TailBody: Decodable { var tail: Position }

    private struct Mismatch: Decodable {
        var seqNumMismatch: UInt64?
        enum CodingKeys: String, CodingKey { case seqNumMismatch = "seq_num_mismatch" }
    }

    private struct SequencedRecord: Decodable {
        var seqNum: UInt64
        var timestamp: Int64
        var body: String?
        var headers: [[String]]?

        enum CodingKeys: String, CodingKey {
            case seqNum = "seq_num"
            case timestamp, body, headers
        }

        /// Read in S2's base64 format, so bytes that are not text stay as they are.
        var record: ChannelRecord {
            let bytes = Data(base64Encoded: body ?? "") ?? Data()
            let text = String(validating: bytes, as: UTF8.self)
            return ChannelRecord(
                seqNum: seqNum,
                timestamp: timestamp,
                body: text ?? bytes.base64EncodedString(),
                headers: (headers ?? []).map {
                    $0.map { String(decoding: Data(base64Encoded: $0) ?? Data(), as: UTF8.self) }
                },
                isBinary: text == nil
            )
        }
    }

    private struct ReadBatch: Decodable { var records: [SequencedRecord] }

    private struct ErrorBody: Decodable {
        var code: String?
        var message: String?
    }

    private enum Envelope {
        struct Identified: Decodable { var id: String? }
        static func id(of body: String) -> String? {
            try? JSONDecoder().decode(Identified.self, from: Data(body.utf8)).id
        }
    }
}

/// One S2 read session of a follow: the next sequence number it is to hand on, and when it last
/// heard from S2.
private final class FollowSession: Sendable {
    private let state: Mutex<(next: UInt64, heardAt: ContinuousClock.Instant)>

    init(from next: UInt64) { state = Mutex((next, .now)) }

    var next: UInt64 { state.withLock { $0.next } }

    func reached(_ next: UInt64) { state.withLock { $0.next = next } }

    func heard() { state.withLock { $0.heardAt = .now } }

    var silence: Duration { .now - state.withLock { $0.heardAt } }
}
