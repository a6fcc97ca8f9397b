import Contracts
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import ServiceKit
import ServiceLifecycle
import Synchronization

/// `/realtime/v1/sessions/:session/:io…` (SPEC §5): initialize for direct writes, append, SSE
/// replay and live tail, and the tail position.
///
/// Every route authenticates, then resolves the session and authorizes against the id of the
/// path and both of the session's ids — so a caller without access gets 403 whether or not the
/// session exists — and only then answers 404.
struct ChannelRoutes: Sendable {
    let directory: SessionDirectory
    let store: any StreamStore
    let hub: ChannelHub
    let directWrites: any DirectWriteIssuer
    let writerSettings: DirectWriteSettings
    /// Set when the store is not JetStream: appends are copied there for waitpoints.
    let appended: AppendNotifier?
    let pingInterval: Duration
    let logger: Logger

    static let appendLimit = 512 * 1024
    static let exposedHeaders = [
        "X-S2-Access-Token", "X-S2-Stream-Name", "X-S2-Basin", "X-S2-Endpoint", "X-S2-Flush-Interval-Ms",
        "X-S2-Max-Retries", "X-Last-Seq-Num", "X-Stream-Version", "X-Session-Id",
    ]

    /// What `PUT` tells a direct writer besides its credentials.
    struct DirectWriteSettings: Sendable {
        var basin: String
        var flushIntervalMilliseconds: Int
        var maxRetries: Int
    }

    func add(to router: Router<APIRequestContext>, authenticator: any Authenticator) {
        let channels = router.group("realtime/v1/sessions").add(middleware: AuthenticationMiddleware(authenticator))
        channels.put("{session}/{io}", use: initialize)
        channels.post("{session}/{io}/append", use: append)
        channels.get("{session}/{io}", use: subscribe)
        channels.head("{session}/{io}", use: tail)
    }

    // MARK: Routes

    @Sendable func initialize(_ request: Request, context: APIRequestContext) async throws -> Response {
        let (session, channel) = try await authorizedChannel(context, .write)
        if let refusal = session.writeRefusal("initialize a channel on") { throw APIError(.badRequest, refusal) }
        let principal = try context.requirePrincipal()
        let writer = DirectWriter(
            expiresAt: principal.expiresAt,
            canRead: (try? authorize(principal, .read, key: context.pathId("session"), session: session)) != nil
        )
        let credentials = try await storeCall { try await directWrites.credentials(for: channel, writer: writer) }
        var headers = HTTPFields()
        headers[.s2AccessToken] = credentials.token
        headers[.s2StreamName] = credentials.streamName
        headers[.s2Basin] = writerSettings.basin
        headers[.s2Endpoint] = credentials.endpoint
        headers[.s2FlushInterval] = String(writerSettings.flushIntervalMilliseconds)
        headers[.s2MaxRetries] = String(writerSettings.maxRetries)
        return try .json(["version": "v2"], status: .accepted, headers: headers)
    }

    @Sendable func append(_ request: Request, context: APIRequestContext) async throws -> Response {
        _ = try context.requirePrincipal()
        let body = try await request.limitedBody(limit: Self.appendLimit)
        guard let text = String(validating: body.readableBytesView, as: UTF8.self) else {
            throw APIError(.badRequest, "The request body must be UTF-8 text")
        }
        let partId = try Self.partId(request)
        let (_, channel) = try await authorizedChannel(context, .write)
        let envelope = RecordJSON.envelope(data: text, id: partId ?? Self.generatedPartId())
        // Escaping can grow a body sixfold (a control character is `\u0001`): the record must
        // still fit where S2 keeps one, 1 MiB.
        let recordBytes = ChannelRecord.meteredBytes(body: envelope, headers: [], isBinary: false)
        guard recordBytes <= S2Routes.maxBatchBytes else {
            throw APIError(
                .payloadTooLarge,
                "The record would be \(recordBytes) bytes once its body is escaped as JSON; at most 1 MiB"
            )
        }
        let ack: AppendAck
        do {
            ack = try await storeCall {
                let ack = try await store.append(
                    channel,
                    bodies: [envelope],
                    partId: partId,
                    matchSeqNum: nil,
                    admit: { try await directory.admit(channel, "append to") }
                )
                try await appended?.appended(channel, ack: ack, bodies: [envelope])
                return ack
            }
        } catch let refused as AppendRefused {
            return Self.appendFailure(refused.message)
        }
        if !ack.isReplay { RealtimeMetrics.appendedRecords.increment() }
        return try .json(AppendResponse(ok: true, seqNum: ack.start))
    }

    @Sendable func tail(_ request: Request, context: APIRequestContext) async throws -> Response {
        let (_, channel) = try await authorizedChannel(context, .read)
        let tail = try await storeCall { try await store.tail(channel) }
        var headers = HTTPFields()
        headers[.lastSeqNum] = String(Int64(tail.nextSeqNum) - 1)
        return Response(status: .ok, headers: headers)
    }

    @Sendable func subscribe(_ request: Request, context: APIRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let timeout = try Self.timeout(request)
        let start = try Self.start(request)
        let key = try context.pathId("session")
        let io = try Self.io(context)
        let found = try await directory.session(key, environmentId: principal.environmentId)
        try authorize(principal, .read, key: key, session: found)
        if found == nil, key.hasPrefix("session_") { throw APIError(.notFound, "Session not found") }
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache, no-transform"
        headers[.accelBuffering] = "no"
        headers[.streamVersion] = "v2"
        // Which session a name led to: an externalId may have moved to another session since
        // the client's last connection, and then its Last-Event-ID belongs to the old one.
        if let found { headers[.sessionId] = found.friendlyId }
        let stream = EventStream(
            hub: hub,
            pingInterval: pingInterval,
            idleTimeout: timeout,
            logger: logger
        )
        return Response(
            status: .ok,
            headers: headers,
            body: ResponseBody { writer in
                // An externalId may be subscribed to before its session exists: wait for it, with
                // heartbeats meanwhile (a client that left is noticed when one cannot be written).
                var session = found
                let deadline = ContinuousClock.now + timeout
                while session == nil, case let remaining = deadline - .now, remaining > .zero {
                    session = try await directory.waitForSession(
                        key,
                        environmentId: principal.environmentId,
                        timeout: min(remaining, pingInterval)
                    )
                    if session == nil, ContinuousClock.now < deadline { try await writer.write(EventStream.ping()) }
                }
                if let session {
                    let channel = ChannelAddress(
                        environmentId: session.environmentId,
                        friendlyId: session.friendlyId,
                        io: io
                    )
                    // A Last-Event-ID past the end starts at the end, as a clamped S2 read does:
                    // records appended later are not skipped.
                    let from = start == 0 ? 0 : min(start, try await store.tail(channel).nextSeqNum)
                    try await stream.run(channel, from: from, writer: &writer)
                }
                try await writer.finish(nil)
            }
        )
    }

    // MARK: Helpers

    private func authorizedChannel(
        _ context: APIRequestContext,
        _ action: AccessRequirement.Action
    ) async throws
        -> (SessionRecord, ChannelAddress)
    {
        let principal = try context.requirePrincipal()
        let key = try context.pathId("session")
        let io = try Self.io(context)
        let session = try await directory.session(key, environmentId: principal.environmentId)
        try authorize(principal, action, key: key, session: session)
        guard let session else { throw APIError(.notFound, "Session not found") }
        return (session, ChannelAddress(environmentId: session.environmentId, friendlyId: session.friendlyId, io: io))
    }

    private func authorize(
        _ principal: Principal,
        _ action: AccessRequirement.Action,
        key: String,
        session: SessionRecord?
    ) throws {
        try principal.authorize(
            AccessRequirement(
                action,
                .sessions,
                ids: [key, session?.friendlyId, session?.externalId],
                superScopes: ["\(action.rawValue):sessions", "\(action.rawValue):all", "admin"]
            )
        )
    }

    private func storeCall<Result>(_ body: () async throws -> Result) async throws -> Result {
        do {
            return try await body()
        } catch let error as StreamStoreError {
            logger.error("The channel store failed.", metadata: ["error": "\(error)"])
            throw APIError(.unavailable, "Channels are unavailable; try again")
        }
    }

    private static func io(_ context: APIRequestContext) throws -> ChannelIO {
        guard let io = ChannelIO(rawValue: try context.parameters.require("io")) else {
            throw APIError(.badRequest, "Invalid channel: must be out or in")
        }
        return io
    }

    /// `X-Part-Id`: 1–256 characters when present.
    private static func partId(_ request: Request) throws -> String? {
        let fields = request.headers.filter { $0.name == .partId }
        guard let field = fields.first else { return nil }
        guard fields.count == 1 else { throw APIError(.badRequest, "Invalid X-Part-Id header: give it once") }
        // Bytes that are not UTF-8 reach us as U+FFFD (the HTTP parser's decoding), so different
        // part ids would be one: refused, with the replacement character itself.
        let partId = field.value
        guard !partId.unicodeScalars.contains("\u{FFFD}") else {
            throw APIError(.badRequest, "Invalid X-Part-Id header: must be UTF-8 text (and not U+FFFD)")
        }
        guard (1...256).contains(partId.count) else {
            throw APIError(.badRequest, "Invalid X-Part-Id header: must be 1 to 256 characters")
        }
        return partId
    }

    private static func generatedPartId() -> String { String(Identifier.secret(length: 12)) }

    /// `Timeout-Seconds`: an integer 1–600, default 60.
    static func timeout(_ request: Request) throws -> Duration {
        guard let text = request.headers[.timeoutSeconds] else { return .seconds(60) }
        guard !text.isEmpty, text.allSatisfy(\.isASCII), text.allSatisfy(\.isNumber), let seconds = Int(text),
            (1...600).contains(seconds)
        else { throw APIError(.badRequest, "Invalid Timeout-Seconds header: must be an integer from 1 to 600") }
        return .seconds(seconds)
    }

    /// The first sequence number to send: after `Last-Event-ID` (`N` or S2's `N,count,bytes`;
    /// negative means from the start), or 0.
    static func start(_ request: Request) throws -> UInt64 {
        guard let text = request.headers[.lastEventID], !text.isEmpty else { return 0 }
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 1 || parts.count == 3, let last = Int64(parts[0]),
            parts.dropFirst().allSatisfy({ UInt64($0) != nil })
        else {
            throw APIError(.badRequest, "Invalid Last-Event-ID header: must be a sequence number, or N,count,bytes")
        }
        return last < 0 ? 0 : UInt64(last) + 1
    }

    private static func appendFailure(_ message: String) -> Response {
        let body = try! JSONEncoder.sessions.encode(AppendResponse(ok: false, error: message))
        return Response(
            status: .badRequest,
            headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: body))
        )
    }

    private struct AppendResponse: Encodable {
        var ok: Bool
        var seqNum: UInt64?
        var error: String?
    }
}

extension HTTPField.Name {
    static let s2AccessToken = Self("X-S2-Access-Token")!
    static let s2StreamName = Self("X-S2-Stream-Name")!
    static let s2Basin = Self("X-S2-Basin")!
    static let s2Endpoint = Self("X-S2-Endpoint")!
    static let s2FlushInterval = Self("X-S2-Flush-Interval-Ms")!
    static let s2MaxRetries = Self("X-S2-Max-Retries")!
    static let lastSeqNum = Self("X-Last-Seq-Num")!
    static let streamVersion = Self("X-Stream-Version")!
    static let sessionId = Self("X-Session-Id")!
    static let partId = Self("X-Part-Id")!
    static let timeoutSeconds = Self("Timeout-Seconds")!
    static let lastEventID = Self("Last-Event-ID")!
    static let accelBuffering = Self("X-Accel-Buffering")!
}

extension SessionRecord {
    /// Why a write is refused now ("Cannot {doing} a closed session"), or nil while it takes them.
    func writeRefusal(_ doing: String) -> String? {
        switch status() {
        case .closed: "Cannot \(doing) a closed session"
        case .expired: "Cannot \(doing) an expired session"
        case .active: nil
        }
    }
}
