import Contracts
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import ServiceKit

/// The subset of S2's REST API a direct writer needs, served over the JetStream store at
/// `/realtime/s2/v1/streams/{stream}/records[/tail]` (see `reference/s2-api.md`), so a client
/// written for S2 works unchanged. Authenticated by the channel token `PUT …/:io` issued; a
/// token reaches its own channel only. Errors are S2's: `{"code": …, "message": …}`.
struct S2Routes: Sendable {
    let directory: SessionDirectory
    let store: any StreamStore
    let hub: ChannelHub
    let tokens: ChannelTokens
    let pingInterval: Duration
    let logger: Logger

    /// S2's limits: 1,000 records and 1 MiB (metered) per append.
    static let maxBatchRecords = 1000
    static let maxBatchBytes = 1024 * 1024

    func add(to router: Router<APIRequestContext>) {
        let streams = router.group("realtime/s2/v1/streams")
        streams.post("{stream}/records", use: s2 { try await append($0, $1) })
        streams.get("{stream}/records", use: s2 { try await read($0, $1) })
        streams.get("{stream}/records/tail", use: s2 { try await checkTail($0, $1) })
    }

    // MARK: Routes

    func append(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let channel = try await authorizedChannel(request, context)
        // The SDKs' binary transports (protobuf, s2s sessions): refused rather than misread.
        if let type = request.headers[.contentType]?.lowercased(), type.contains("protobuf") || type.contains("s2s") {
            throw S2Error(
                .unsupportedMediaType,
                "bad_header",
                "Only JSON appends are served here, not \(type): use the SDK's fetch transport"
            )
        }
        let buffer = try await request.limitedBody(limit: 8 * Self.maxBatchBytes)
        guard let input = try? JSONDecoder().decode(AppendInput.self, from: Data(buffer.readableBytesView)),
            !JSONValue.hasTrailingComma(buffer.readableBytesView)
        else {
            throw S2Error(.badRequest, "bad_json", "The body must be an append input: {\"records\": [{\"body\": …}]}")
        }
        guard (1...Self.maxBatchRecords).contains(input.records.count) else {
            throw S2Error(.unprocessableContent, "invalid", "An append holds 1 to 1000 records")
        }
        // A stream's fencing token is empty until a fence sets one, which is not supported.
        guard input.fencingToken?.isEmpty ?? true else {
            throw S2Error(.unprocessableContent, "invalid", "Fencing tokens are not supported")
        }
        let format = try Self.format(request)
        var records: [NewRecord] = []
        var metered = 0
        for input in input.records {
            let record = try format.record(body: input.body ?? "", headers: input.headers ?? [])
            guard try ChannelRecord.headersJSONBytes(record.headers) <= ChannelRecord.maxHeadersJSONBytes else {
                throw S2Error(
                    .unprocessableContent,
                    "invalid",
                    "A record's headers may take at most \(ChannelRecord.maxHeadersJSONBytes / 1024) KiB as JSON "
                        + "([[name, value], …]) here"
                )
            }
            metered += ChannelRecord.meteredBytes(body: record.body, headers: record.headers, isBinary: record.isBinary)
            records.append(record)
        }
        guard metered <= Self.maxBatchBytes else {
            throw S2Error(.unprocessableContent, "invalid", "An append may hold at most 1 MiB of records")
        }
        // A token outlives a close: the session decides, at the append's turn, whether it still
        // takes records.
        let ack: AppendAck
        do {
            ack = try await store.append(
                channel,
                records: records,
                partId: nil,
                matchSeqNum: input.matchSeqNum,
                admit: { try await directory.admit(channel, "append to") }
            )
        } catch StreamStoreError.seqNumMismatch(let next) {
            return try Self.json(["seq_num_mismatch": next], status: .preconditionFailed)
        } catch let refused as AppendRefused {
            throw S2Error(.badRequest, "invalid", refused.message)
        }
        RealtimeMetrics.appendedRecords.increment(by: records.count)
        let end = Position(seqNum: ack.end, timestamp: ack.timestamp)
        return try Self.json(
            AppendOutput(start: Position(seqNum: ack.start, timestamp: ack.timestamp), end: end, tail: end)
        )
    }

    func checkTail(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let channel = try await authorizedChannel(request, context)
        let tail = try await store.tail(channel)
        return try Self.json(["tail": Position(seqNum: tail.nextSeqNum, timestamp: tail.timestamp)])
    }

    func read(_ request: Request, _ context: APIRequestContext) async throws -> Response {
        let channel = try await authorizedChannel(request, context, reading: true)
        let query = request.uri.queryParameters
        let format = try Self.format(request)
        let accept = request.headers[.accept]?.lowercased() ?? ""
        let isStream = accept.contains("text/event-stream")
        if !isStream, accept.contains("protobuf") || accept.contains("s2s"), !accept.contains("json") {
            throw S2Error(
                .notAcceptable,
                "bad_header",
                "Only JSON and text/event-stream reads are served here: use the SDK's fetch transport"
            )
        }
        let starts = ["seq_num", "tail_offset", "timestamp"].filter { query[$0] != nil }
        guard starts.count <= 1 else {
            throw S2Error(.badRequest, "bad_query", "Give at most one of seq_num, tail_offset and timestamp")
        }
        let limits = ReadLimits(
            count: try Self.integer(query, "count", in: 0...Int.max),
            bytes: try Self.integer(query, "bytes", in: 0...Int.max),
            until: try Self.integer(query, "until", in: 0...Int.max).map(Int64.init)
        )
        // As S2: a bounded read does not wait unless asked to; an unbounded one follows for good.
        let wait = try Self.integer(query, "wait", in: 0...Int(UInt32.max)) ?? (limits.isBounded ? 0 : nil)
        let clamp: Bool
        switch query["clamp"] {
        case nil, "false", "0": clamp = false
        case "true", "1": clamp = true
        default: throw S2Error(.badRequest, "bad_query", "Invalid clamp: true or false")
        }
        let tail = try await store.tail(channel)
        var start: UInt64
        var sent = (count: 0, bytes: 0)
        if isStream, let lastEventID = request.headers[.lastEventID], !lastEventID.isEmpty {
            // S2's `seq,count,bytes`: resume after seq, counting on from what was sent, so a
            // bounded read stays bounded.
            let parts = lastEventID.split(separator: ",", omittingEmptySubsequences: false).map {
                Int64($0.trimmingCharacters(in: .whitespaces))
            }
            guard parts.count <= 3, let last = parts[0], last < Int64.max,
                parts.dropFirst().allSatisfy({ $0.map { (0...(1 << 53)).contains($0) } ?? false })
            else { throw S2Error(.badRequest, "bad_header", "Invalid Last-Event-ID") }
            start = last < 0 ? 0 : UInt64(last) + 1
            sent = (parts.count > 1 ? Int(parts[1]!) : 0, parts.count > 2 ? Int(parts[2]!) : 0)
        } else if let seqNum = try Self.integer(query, "seq_num", in: 0...Int.max) {
            start = UInt64(seqNum)
        } else if let offset = try Self.integer(query, "tail_offset", in: 0...Int.max) {
            start = tail.nextSeqNum - min(tail.nextSeqNum, UInt64(offset))
        } else if let timestamp = try Self.integer(query, "timestamp", in: 0...Int.max) {
            start = try await firstSeqNum(atOrAfter: Int64(timestamp), in: channel, tail: tail)
        } else {
            start = tail.nextSeqNum
        }
        if start > tail.nextSeqNum {
            guard clamp else {
                return try Self.json(
                    ["tail": Position(seqNum: tail.nextSeqNum, timestamp: tail.timestamp)],
                    status: .rangeNotSatisfiable
                )
            }
            start = tail.nextSeqNum
        }
        if isStream {
            let stream = EventStream(
                hub: hub,
                pingInterval: pingInterval,
                idleTimeout: wait.map { .seconds(max($0, 1)) } ?? Self.forever,
                logger: logger,
                style: .s2(format: format, limits: limits, sent: sent, tail: tail),
                endBefore: wait == 0 ? tail.nextSeqNum : nil
            )
            var headers = HTTPFields()
            headers[.contentType] = "text/event-stream"
            headers[.cacheControl] = "no-cache, no-transform"
            headers[.accelBuffering] = "no"
            let from = start
            return Response(
                status: .ok,
                headers: headers,
                body: ResponseBody { writer in
                    try await stream.run(channel, from: from, writer: &writer)
                    try await writer.finish(nil)
                }
            )
        }
        let limit = min(limits.count ?? Self.maxBatchRecords, Self.maxBatchRecords)
        var records = limit == 0 ? [] : try await store.read(channel, from: start, limit: limit)
        if records.isEmpty, limit > 0, let wait, wait > 0 {
            records = try await waitForRecords(channel, from: start, limit: limit, timeout: .seconds(min(wait, 60)))
        }
        // At most 1 MiB, as S2 answers: a record is never more (appends refuse it), so the first
        // always fits.
        var unary = limits
        unary.bytes = min(limits.bytes ?? Self.maxBatchBytes, Self.maxBatchBytes)
        records = unary.take(records, after: (0, 0)).records
        let latest = try await store.tail(channel)
        return try Self.json(
            ReadBatch(
                records: try records.map { try SequencedRecord($0, format: format) },
                tail: Position(seqNum: latest.nextSeqNum, timestamp: latest.timestamp)
            )
        )
    }

    // MARK: Helpers

    /// The first sequence number whose record was stored at or after `timestamp` (epoch ms), or
    /// the tail when none was; a binary search, as a channel's timestamps never go back.
    private func firstSeqNum(
        atOrAfter timestamp: Int64,
        in channel: ChannelAddress,
        tail: ChannelTail
    ) async throws -> UInt64 {
        var (low, high) = (UInt64(0), tail.nextSeqNum)
        while low < high {
            let middle = low + (high - low) / 2
            guard let record = try await store.read(channel, from: middle, limit: 1).first,
                record.timestamp < timestamp
            else {
                high = middle
                continue
            }
            low = record.seqNum + 1
        }
        return low
    }

    /// How long an SSE read without `wait` or a limit follows: as long as the client stays.
    static let forever = Duration.seconds(100 * 365 * 86_400)

    /// Waits up to `timeout` for the first records from `start` (a long-polling unary read).
    private func waitForRecords(
        _ channel: ChannelAddress,
        from start: UInt64,
        limit: Int,
        timeout: Duration
    ) async throws
        -> [ChannelRecord]
    {
        let subscription = try hub.subscribe(channel, from: start)
        defer { subscription.cancel() }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            subscription.mailbox.end(.shutdown)
        }
        defer { timer.cancel() }
        while true {
            do {
                guard let records = try await subscription.next() else { return [] }
                if !records.isEmpty { return Array(records.prefix(limit)) }
            } catch is Mailbox.Ending {
                return []
            }
        }
    }

    /// The channel the request's token grants; `reading` its records needs a token whose
    /// caller could read them.
    private func authorizedChannel(
        _ request: Request,
        _ context: APIRequestContext,
        reading: Bool = false
    ) async throws -> ChannelAddress {
        guard let token = request.bearerToken else {
            throw S2Error(.unauthorized, "authn", "A bearer access token is required")
        }
        let raw = try context.parameters.require("stream")
        let name = raw.removingPercentEncoding ?? raw
        guard let granted = await tokens.grant(token: token, streamName: name) else {
            throw S2Error(.unauthorized, "authn", "The access token is invalid or has expired")
        }
        guard let grant = granted else {
            throw S2Error(.forbidden, "permission_denied", "The access token does not grant this stream")
        }
        guard grant.canRead || !reading else {
            throw S2Error(
                .forbidden,
                "permission_denied",
                "The access token grants appending to this stream, not reading it"
            )
        }
        return grant.channel
    }

    /// Runs an S2 route, answering its errors in S2's format.
    private func s2(
        _ handler: @escaping @Sendable (Request, APIRequestContext) async throws -> Response
    ) -> @Sendable (Request, APIRequestContext) async throws -> Response {
        let logger = self.logger
        return { request, context in
            do {
                return try await handler(request, context)
            } catch let error as S2Error {
                return error.response()
            } catch let error as APIError where error.code == .payloadTooLarge || error.code == .badRequest {
                // What is wrong with the body itself (no Content-Length, too long, cut short).
                return S2Error(error.status, error.code == .badRequest ? "bad_frame" : "invalid", error.message)
                    .response()
            } catch let error as StreamStoreError {
                logger.error("The channel store failed.", metadata: ["error": "\(error)"])
                return S2Error(.serviceUnavailable, "unavailable", "The stream store is unavailable; try again")
                    .response()
            }
        }
    }

    private static func integer(_ query: Parameters, _ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let text = query[name[...]] else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw S2Error(.badRequest, "bad_query", "Invalid \(name)")
        }
        return value
    }

    static func format(_ request: Request) throws -> BodyFormat {
        switch request.headers[.s2Format]?.lowercased() {
        case nil, "raw", "json": return .raw
        case "base64", "json-binsafe": return .base64
        default: throw S2Error(.badRequest, "bad_header", "Invalid s2-format: use raw or base64")
        }
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        Response(
            status: status,
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: try JSONEncoder.sessions.encode(value)))
        )
    }

    // MARK: Wire types

    /// What bounds an S2 read: records, metered bytes, and an exclusive timestamp.
    struct ReadLimits: Sendable {
        var count: Int?
        var bytes: Int?
        var until: Int64?

        var isBounded: Bool { count != nil || bytes != nil || until != nil }

        /// The first of `records` within the limits, when `sent` (records, metered bytes) went
        /// out before them, and whether a limit stopped them (the read is complete).
        func take(
            _ records: [ChannelRecord],
            after sent: (count: Int, bytes: Int)
        ) -> (records: [ChannelRecord], reached: Bool) {
            var (count, bytes) = sent
            for (index, record) in records.enumerated() {
                let next = bytes + record.meteredBytes
                if self.count.map({ count >= $0 }) ?? false || self.bytes.map({ next > $0 }) ?? false
                    || until.map({ record.timestamp >= $0 }) ?? false
                {
                    return (Array(records.prefix(index)), true)
                }
                (count, bytes) = (count + 1, next)
            }
            // Reached too when no record could fit any more: the smallest is 8 bytes, metered.
            return (records, self.count.map { count >= $0 } ?? false || self.bytes.map { bytes + 8 > $0 } ?? false)
        }
    }

    enum BodyFormat: Sendable {
        case raw, base64

        /// An appended record as given in this format, checked. Headers are text; a body in
        /// base64 that is not text is kept as bytes. A command record (one header, named "") may
        /// be `trim`, stored and read like S2's — though the records before it are kept — and
        /// not `fence`, as fencing tokens are not supported.
        func record(body: String, headers: [[String]]) throws -> NewRecord {
            let headers = try headers.map { header in
                guard header.count == 2 else {
                    throw S2Error(.unprocessableContent, "invalid", "A record header is a [name, value] pair")
                }
                return try header.map { try text($0, of: "Record header names and values") }
            }
            if let command = headers.first(where: { $0[0].isEmpty }) {
                guard headers.count == 1 else {
                    throw S2Error(.unprocessableContent, "invalid", "A command record has exactly one header")
                }
                switch command[1] {
                case "trim": break
                case "fence": throw S2Error(.unprocessableContent, "invalid", "Fencing is not supported")
                default: throw S2Error(.unprocessableContent, "invalid", "Unknown command record: \(command[1])")
                }
            }
            switch self {
            case .raw: return NewRecord(body: body, headers: headers)
            case .base64:
                guard let data = Data(base64Encoded: body) else {
                    throw S2Error(.unprocessableContent, "invalid", "Record bodies must be base64")
                }
                guard let text = String(validating: data, as: UTF8.self) else {
                    return NewRecord(body: data.base64EncodedString(), headers: headers, isBinary: true)
                }
                return NewRecord(body: text, headers: headers)
            }
        }

        private func text(_ value: String, of what: String) throws -> String {
            switch self {
            case .raw: return value
            case .base64:
                guard let data = Data(base64Encoded: value), let text = String(validating: data, as: UTF8.self) else {
                    throw S2Error(.unprocessableContent, "invalid", "\(what) must be base64 of UTF-8 text")
                }
                return text
            }
        }

        func encode(_ text: String) -> String {
            switch self {
            case .raw: text
            case .base64: Data(text.utf8).base64EncodedString()
            }
        }
    }

    struct AppendInput: Decodable {
        struct Record: Decodable {
            var body: String?
            var headers: [[String]]?
            /// Read only so that one of the wrong type is refused: records take the time of
            /// their append (see the README).
            var timestamp: UInt64?
        }
        var records: [Record]
        var matchSeqNum: UInt64?
        var fencingToken: String?

        enum CodingKeys: String, CodingKey {
            case records
            case matchSeqNum = "match_seq_num"
            case fencingToken = "fencing_token"
        }
    }

    struct Position: Codable, Sendable {
        var seqNum: UInt64
        var timestamp: Int64

        enum CodingKeys: String, CodingKey {
            case seqNum = "seq_num"
            case timestamp
        }
    }

    struct AppendOutput: Encodable {
        var start: Position
        var end: Position
        var tail: Position
    }

    struct SequencedRecord: Encodable {
        var seqNum: UInt64
        var timestamp: Int64
        var body: String
        var headers: [[String]] = []

        init(_ record: ChannelRecord, format: BodyFormat) throws {
            seqNum = record.seqNum
            timestamp = record.timestamp
            body = record.isBinary && format == .base64 ? record.body : format.encode(record.text)
            headers = record.headers.map { $0.map(format.encode) }
        }

        enum CodingKeys: String, CodingKey {
            case seqNum = "seq_num"
            case timestamp, body, headers
        }
    }

    struct ReadBatch: Encodable {
        var records: [SequencedRecord]
        var tail: Position?
    }
}

/// An error answered in S2's format.
struct S2Error: Error {
    var status: HTTPResponse.Status
    var code: String
    var message: String

    init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    func response() -> Response {
        (try? S2Routes.json(["code": code, "message": message], status: status)) ?? Response(status: status)
    }
}

extension HTTPField.Name {
    static let s2Format = Self("S2-Format")!
}
