import Contracts
import Foundation
import HTTPTypes
import Hummingbird
import Nats
import ServiceKit

/// The waitpoint routes (SPEC §6): wait on a session channel, read a waitpoint, long-poll it.
/// Secret API keys only: these are for tasks and their run engine, never for browsers.
struct WaitpointRoutes: Sendable {
    let engine: WaitpointEngine

    static let bodyLimit = 10 * 1024

    func add(to router: Router<APIRequestContext>, authenticator: any Authenticator) {
        let authenticated = AuthenticationMiddleware(authenticator)
        router.group("api/v1/runs").add(middleware: authenticated).post("{run}/session-streams/wait", use: wait)
        let waitpoints = router.group("api/v1/waitpoints").add(middleware: authenticated)
        waitpoints.get("{waitpoint}", use: retrieve)
        waitpoints.get("{waitpoint}/wait", use: longPoll)
    }

    @Sendable func wait(_ request: Request, context: APIRequestContext) async throws -> Response {
        let principal = try Self.secretKey(context)
        let runId = try context.pathId("run")
        let fields = Fields(try await request.jsonObject(limit: Self.bodyLimit))
        // Trimmed, as the control plane trims names: a blank one is a 400, not a 404.
        let session = try fields.requiredString("session", length: 1...256, trim: true)
        guard let io = ChannelIO(rawValue: try fields.requiredString("io", length: 1...256)) else {
            throw APIError(.badRequest, "Invalid request body: io must be out or in")
        }
        let timeoutAt = try fields.string("timeout", length: 1...100).map(Self.timeout)
        let idempotencyKey = try fields.string("idempotencyKey", length: 1...256)
        let idempotencyTTL = try fields.string("idempotencyKeyTTL", length: 1...32).map(Self.idempotencyTTL)
        let tags = try Self.tags(fields)
        let lastSeqNum = try fields.integer("lastSeqNum", in: -1...Int64(Int32.max) * 1_000_000)
        guard let record = try await engine.connection.resolveSession(session, environmentId: principal.environmentId)
        else { throw APIError(.notFound, "Session not found") }
        let channel = ChannelAddress(environmentId: principal.environmentId, friendlyId: record.friendlyId, io: io)
        let start = try await start(on: channel, after: lastSeqNum)
        let (waitpoint, isCached) = try await engine.store.create(
            NewWaitpoint(
                principal: principal,
                runId: runId,
                channel: channel,
                fromSeqNum: start.fromSeqNum,
                timeoutAt: timeoutAt,
                idempotencyKey: idempotencyKey,
                idempotencyKeyExpiresAt: idempotencyKey == nil
                    ? nil : idempotencyTTL.map { Date().addingTimeInterval($0) },
                tags: tags,
                output: start.record.map(WaitpointEngine.output)
            )
        )
        if waitpoint.isPending {
            try await engine.register(waitpoint, check: start.checked)
        } else if !isCached {
            engine.announce([waitpoint], .completed)
        }
        return try .json(WaitResponse(waitpointId: waitpoint.id, isCached: isCached))
    }

    @Sendable func retrieve(_ request: Request, context: APIRequestContext) async throws -> Response {
        try .json(try await waitpoint(context).item)
    }

    /// Answers as soon as the waitpoint leaves `PENDING`, or after `timeout` seconds (1–600,
    /// default 30) with it still pending.
    @Sendable func longPoll(_ request: Request, context: APIRequestContext) async throws -> Response {
        var timeout = 30
        if let text = request.uri.queryParameters["timeout"] {
            guard let seconds = Int(text), (1...600).contains(seconds) else {
                throw APIError(.badRequest, "Invalid timeout: must be a whole number of seconds from 1 to 600")
            }
            timeout = seconds
        }
        // Listen first, then look, so a completion in between is not missed.
        let settled = engine.settled.listen(try context.parameters.require("waitpoint"))
        let found = try await waitpoint(context)
        guard found.isPending else { return try .json(found.item) }
        let deadline = ContinuousClock.now + .seconds(timeout)
        let store = engine.store
        let environmentId = found.item.environmentId
        /// The waitpoint as PostgreSQL has it, once it is no longer pending.
        @Sendable func settledRow() async -> WaitpointItem? {
            guard let row = try? await store.find(found.id, environmentId: environmentId), !row.isPending else {
                return nil
            }
            return row.item
        }
        let outcome = await withTaskGroup(of: WaitpointItem?.self) { group in
            group.addTask {
                for await signal in settled {
                    // nil: signals may have been lost, so look.
                    if let item = signal { return item }
                    if let item = await settledRow() { return item }
                }
                return nil
            }
            // The settled signal is best effort (core NATS; a reconnect makes every poll look
            // again): a slow consumer can still miss one, so look now and then anyway, at a
            // spread-out pace so that many waiting polls do not load the database.
            group.addTask {
                while ContinuousClock.now < deadline {
                    let pause = Duration.milliseconds(Int.random(in: 20_000...40_000))
                    try? await Task.sleep(for: min(pause, deadline - ContinuousClock.now))
                    if Task.isCancelled { return nil }
                    if let item = await settledRow() { return item }
                }
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        if let outcome, outcome.environmentId == environmentId { return try .json(outcome) }
        let current = try await store.find(found.id, environmentId: environmentId) ?? found
        return try .json(current.item)
    }

    // MARK: Helpers

    /// Where a new wait on `channel` starts: the record after `lastSeqNum` when it is there
    /// already (the waitpoint is created completed with it, so a timeout that is already past
    /// cannot beat it), else the sequence number the wait is for. That is never past the
    /// channel's end: a `lastSeqNum` at or beyond the last record waits for the next one, as a
    /// clamped read starts at the tail. Without `lastSeqNum`, the wait is for the next record.
    ///
    /// When realtime does not answer, a wait with `lastSeqNum` is taken as it is (`checked`
    /// false: the sweeper checks its channel, and clamps it, once realtime is back); one without
    /// is 503, for its start is unknown.
    private func start(
        on channel: ChannelAddress,
        after lastSeqNum: Int64?
    ) async throws -> (fromSeqNum: UInt64, record: ChannelRecord?, checked: Bool) {
        let wanted = lastSeqNum.map { UInt64($0 + 1) }
        do {
            let found = try await engine.firstRecord(channel, from: wanted ?? .max)
            return (found.start, found.record, true)
        } catch let error where !(error is CancellationError) {
            guard let wanted else { throw APIError(.unavailable, "Channels are unavailable; try again") }
            return (wanted, nil, false)
        }
    }

    private func waitpoint(_ context: APIRequestContext) async throws -> Waitpoint {
        let principal = try Self.secretKey(context)
        let id = try context.parameters.require("waitpoint")
        guard id.hasPrefix("waitpoint_"), id.count <= 64,
            let waitpoint = try await engine.store.find(id, environmentId: principal.environmentId)
        else { throw APIError(.notFound, "Waitpoint not found") }
        return waitpoint
    }

    private static func secretKey(_ context: APIRequestContext) throws -> Principal {
        let principal = try context.requirePrincipal()
        guard principal.isSecretKey else {
            throw APIError(.forbidden, "Waitpoints need a secret API key, not a public access token")
        }
        return principal
    }

    /// `tags`: a string or up to 10 strings, each 1–128 characters.
    private static func tags(_ fields: Fields) throws -> [String] {
        if case .string(let tag)? = fields.members["tags"] {
            guard (1...128).contains(tag.count) else {
                throw APIError(.badRequest, "Invalid request body: tags must be 1-128 characters long")
            }
            return [tag]
        }
        if case .array(let items)? = fields.members["tags"], items.count > 10 {
            throw APIError(
                .badRequest,
                "Invalid request body: waitpoints can only have 10 tags, you're trying to set \(items.count)"
            )
        }
        return try fields.strings("tags", maxCount: 10, itemLength: 1...128) ?? []
    }

    /// An ISO-8601 date, or a duration from now: `30s`, `5m`, `2h`, `1d`, `1w`, `1h30m`.
    static func timeout(_ text: String) throws -> Date {
        if let date = ISO8601.date(from: text) {
            guard Date.supportedRange.contains(date) else {
                throw APIError(.badRequest, "Invalid request body: timeout must be a date from 1970 to 2299")
            }
            return date
        }
        // A date and time without a zone (`2026-12-01T09:30:00`) names no one instant.
        if let date = text.prefixMatch(of: /[0-9]{4}-[0-9]{2}-[0-9]{2}T/),
            !text[date.range.upperBound...].contains(where: { "Zz+-".contains($0) })
        {
            throw APIError(
                .badRequest,
                "Invalid request body: timeout must be an ISO-8601 date with a time zone, like 2026-12-01T09:30:00Z"
            )
        }
        let seconds = try DurationText.seconds(
            text,
            subject: "Invalid request body: timeout",
            form: "must be an ISO-8601 date or a duration like 30s, 5m, 2h, 1d, 1w or 1h30m"
        )
        return Date().addingTimeInterval(seconds)
    }

    /// `{digits}{s|m|h|d}`: how long an idempotency key is honoured.
    static func idempotencyTTL(_ text: String) throws -> TimeInterval {
        let form = "must look like 30s, 10m, 2h or 1d"
        guard (try? /[0-9]+[smhd]/.wholeMatch(in: text)) != nil else {
            throw APIError(.badRequest, "Invalid request body: idempotencyKeyTTL \(form)")
        }
        return try DurationText.seconds(text, subject: "Invalid request body: idempotencyKeyTTL", form: form)
    }

    private struct WaitResponse: Encodable {
        var waitpointId: String
        var isCached: Bool
    }
}
