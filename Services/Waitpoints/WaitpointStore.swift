import Contracts
import Foundation
import Postgres
import ServiceKit

/// A waitpoint row.
struct Waitpoint: Sendable, Equatable {
    var item: WaitpointItem
    var channel: ChannelAddress
    /// Records with this sequence number or later complete it.
    var fromSeqNum: UInt64

    var id: String { item.id }
    var isPending: Bool { item.status == .pending }
}

/// What a new waitpoint is made of.
struct NewWaitpoint: Sendable {
    var principal: Principal
    var runId: String
    var channel: ChannelAddress
    var fromSeqNum: UInt64
    var timeoutAt: Date?
    var idempotencyKey: String?
    var idempotencyKeyExpiresAt: Date?
    var tags: [String]
    /// Set when its record is there already: the waitpoint is created completed with it.
    var output: WaitpointOutput?
}

/// The waitpoint table: creates (idempotent by key), conditional completion, timeouts.
/// Waitpoints in PostgreSQL that operators watch.
struct WaitpointBacklog: Sendable {
    var pending: Int
    /// Pending, but not in the Redis registry (Redis refused them; the sweeper retries).
    var unregistered: Int
    /// How late the most overdue timeout is (0: none is due).
    var overdueSeconds: Double
    /// How long the oldest settled waitpoint's event has waited for JetStream.
    var unpublishedSeconds: Double
}

struct WaitpointStore: Sendable {
    let database: PostgresClient

    private static let columns: StaticString = """
        friendly_id, environment_id, run_id, session_friendly_id, io, status, output,
        from_seq_num, timeout_at, idempotency_key, idempotency_key_expires_at, tags, created_at, completed_at
        """

    /// Creates a waitpoint, or returns the one holding the same live idempotency key (cached).
    /// An expired key is taken from its old waitpoint and given to the new one.
    func create(_ new: NewWaitpoint) async throws -> (waitpoint: Waitpoint, isCached: Bool) {
        let environmentId = new.principal.environmentId
        return try await database.withTransaction { connection in
            if let key = new.idempotencyKey {
                let rows = try await connection.query(
                    """
                    SELECT \(unescaped: Self.columns) FROM waitpoints
                    WHERE environment_id = \(environmentId) AND idempotency_key = \(key) FOR UPDATE
                    """
                )
                if let existing = try rows.first.map(Self.waitpoint) {
                    if existing.item.idempotencyKeyExpiresAt.map({ $0 > Date() }) ?? true { return (existing, true) }
                    try await connection.query(
                        "UPDATE waitpoints SET idempotency_key = NULL WHERE friendly_id = \(existing.id)"
                    )
                }
            }
            let id = Identifier.make()
            let output = try new.output.map(Self.text)
            let inserted = try await connection.query(
                """
                INSERT INTO waitpoints (id, friendly_id, environment_id, organization_id, project_id, run_id,
                    session_friendly_id, io, from_seq_num, timeout_at, idempotency_key, idempotency_key_expires_at, tags,
                    status, output, completed_at)
                VALUES (\(id), \("waitpoint_" + id), \(environmentId), \(new.principal.organizationId),
                    \(new.principal.projectId), \(new.runId), \(new.channel.friendlyId), \(new.channel.io.rawValue),
                    \(Int64(new.fromSeqNum)), \(new.timeoutAt), \(new.idempotencyKey), \(new.idempotencyKeyExpiresAt),
                    \(new.tags), CASE WHEN \(output)::text IS NULL THEN 'PENDING' ELSE 'COMPLETED' END, \(output),
                    CASE WHEN \(output)::text IS NOT NULL THEN now() END)
                ON CONFLICT (environment_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                RETURNING \(unescaped: Self.columns)
                """
            )
            if let row = inserted.first { return (try Self.waitpoint(row), false) }
            // A concurrent create with the same key committed first: that one is the waitpoint.
            let rows = try await connection.query(
                """
                SELECT \(unescaped: Self.columns) FROM waitpoints
                WHERE environment_id = \(environmentId) AND idempotency_key = \(new.idempotencyKey)
                """
            )
            guard let row = rows.first else { throw APIError(.conflict, "Idempotency key is in use; try again") }
            return (try Self.waitpoint(row), true)
        }
    }

    func find(_ friendlyId: String, environmentId: String) async throws -> Waitpoint? {
        try await database.query(
            """
            SELECT \(unescaped: Self.columns) FROM waitpoints
            WHERE friendly_id = \(friendlyId) AND environment_id = \(environmentId)
            """
        ).first.map(Self.waitpoint)
    }

    /// Completes the pending ones of these waitpoints with one output, in one statement; returns
    /// those it completed (completion happens once: the others were not pending).
    func complete(_ friendlyIds: [String], with output: WaitpointOutput) async throws -> [Waitpoint] {
        guard !friendlyIds.isEmpty else { return [] }
        let json = try Self.text(output)
        return try await database.query(
            """
            UPDATE waitpoints SET status = 'COMPLETED', output = \(json), completed_at = now()
            WHERE friendly_id = ANY(\(friendlyIds)) AND status = 'PENDING'
            RETURNING \(unescaped: Self.columns)
            """
        ).map(Self.waitpoint)
    }

    /// Makes a pending waitpoint wait for record `seqNum` instead; nil when it is not pending.
    func moveStart(of friendlyId: String, to seqNum: UInt64) async throws -> Waitpoint? {
        try await database.query(
            """
            UPDATE waitpoints SET from_seq_num = \(Int64(seqNum)) WHERE friendly_id = \(friendlyId) AND status = 'PENDING'
            RETURNING \(unescaped: Self.columns)
            """
        ).first.map(Self.waitpoint)
    }

    /// Marks a pending waitpoint for the sweeper, which registers it in Redis and checks its
    /// channel again: Redis could not take it, or the check for a record already there failed.
    func markUnregistered(_ friendlyId: String) async throws {
        try await database.query(
            "UPDATE waitpoints SET unregistered = true WHERE friendly_id = \(friendlyId) AND status = 'PENDING'"
        )
    }

    /// Marks every pending waitpoint for the sweeper: records may have been missed.
    func markAllPendingUnregistered() async throws {
        try await database.query(
            "UPDATE waitpoints SET unregistered = true WHERE status = 'PENDING' AND NOT unregistered"
        )
    }

    /// Up to `limit` pending waitpoints marked for the sweeper, oldest first, after `after`
    /// (created_at, friendly_id) when given.
    func unregistered(after: (Date, String)?, limit: Int) async throws -> [Waitpoint] {
        let (createdAt, id) = after ?? (Date(timeIntervalSince1970: 0), "")
        return try await database.query(
            """
            SELECT \(unescaped: Self.columns) FROM waitpoints WHERE status = 'PENDING' AND unregistered
                AND (created_at, friendly_id) > (\(createdAt), \(id))
            ORDER BY created_at, friendly_id LIMIT \(limit)
            """
        ).map(Self.waitpoint)
    }

    /// Clears the marks of waitpoints that are in the registry now.
    func markRegistered(_ friendlyIds: [String]) async throws {
        guard !friendlyIds.isEmpty else { return }
        try await database.query(
            "UPDATE waitpoints SET unregistered = false WHERE friendly_id = ANY(\(friendlyIds)) AND unregistered"
        )
    }

    /// Times out up to `limit` due waitpoints; several instances may sweep at once.
    func timeOutDue(limit: Int) async throws -> [Waitpoint] {
        let output = try Self.text(WaitpointOutput(value: #"{"message":"The waitpoint timed out"}"#, isError: true))
        return try await database.query(
            """
            UPDATE waitpoints SET status = 'TIMED_OUT', output = \(output), completed_at = now()
            WHERE id IN (
                SELECT id FROM waitpoints WHERE status = 'PENDING' AND timeout_at <= now()
                ORDER BY timeout_at LIMIT \(limit) FOR UPDATE SKIP LOCKED
            )
            RETURNING \(unescaped: Self.columns)
            """
        ).map(Self.waitpoint)
    }

    /// What record `seqNum` of `channel` does, in one statement: completes the channel's pending
    /// waitpoints that wait for exactly that record, and returns them with the channel's pending
    /// waitpoints that wait for an earlier record (overdue: they get the first record at or
    /// after theirs). Both halves name the channel, so each reads only its rows through
    /// `waitpoints_pending_channel` (an update joined to a list of ids read every pending
    /// waitpoint of the system).
    func settle(
        _ channel: ChannelAddress,
        seqNum: UInt64,
        output: WaitpointOutput
    ) async throws -> (completed: [Waitpoint], overdue: [Waitpoint]) {
        let json = try Self.text(output)
        let seq = Int64(seqNum)
        let rows = try await database.query(
            """
            WITH completed AS (
                UPDATE waitpoints SET status = 'COMPLETED', output = \(json), completed_at = now()
                WHERE environment_id = \(channel.environmentId) AND session_friendly_id = \(channel.friendlyId)
                    AND io = \(channel.io.rawValue) AND status = 'PENDING' AND from_seq_num = \(seq)
                RETURNING \(unescaped: Self.columns), true AS settled
            )
            SELECT * FROM completed
            UNION ALL
            SELECT \(unescaped: Self.columns), false AS settled FROM waitpoints
            WHERE environment_id = \(channel.environmentId) AND session_friendly_id = \(channel.friendlyId)
                AND io = \(channel.io.rawValue) AND status = 'PENDING' AND from_seq_num < \(seq)
            """
        )
        var completed: [Waitpoint] = []
        var overdue: [Waitpoint] = []
        for row in rows {
            if try row.decode("settled", as: Bool.self) {
                completed.append(try Self.waitpoint(row))
            } else {
                overdue.append(try Self.waitpoint(row))
            }
        }
        return (completed, overdue)
    }

    /// Every pending waitpoint, a page at a time (by id, after `after`).
    func allPending(after: String, limit: Int) async throws -> [Waitpoint] {
        try await database.query(
            """
            SELECT \(unescaped: Self.columns) FROM waitpoints
            WHERE status = 'PENDING' AND friendly_id > \(after) ORDER BY friendly_id LIMIT \(limit)
            """
        ).map(Self.waitpoint)
    }

    /// Settled waitpoints whose event is not on JetStream yet (oldest first).
    func unpublished(limit: Int) async throws -> [Waitpoint] {
        try await database.query(
            """
            SELECT \(unescaped: Self.columns) FROM waitpoints
            WHERE status <> 'PENDING' AND published_at IS NULL ORDER BY completed_at LIMIT \(limit)
            """
        ).map(Self.waitpoint)
    }

    /// What operators watch (``WaitpointsMetrics``), in one statement over the partial indexes.
    func backlog() async throws -> WaitpointBacklog {
        let row = try await database.query(
            """
            SELECT
                (SELECT count(*) FROM waitpoints WHERE status = 'PENDING') AS pending,
                (SELECT count(*) FROM waitpoints WHERE status = 'PENDING' AND unregistered) AS unregistered,
                (SELECT coalesce(extract(epoch FROM now() - min(timeout_at)), 0)::float8 FROM waitpoints
                    WHERE status = 'PENDING' AND timeout_at IS NOT NULL AND timeout_at <= now()) AS overdue,
                (SELECT coalesce(extract(epoch FROM now() - min(completed_at)), 0)::float8 FROM waitpoints
                    WHERE status <> 'PENDING' AND published_at IS NULL) AS unpublished
            """
        )[0]
        return WaitpointBacklog(
            pending: try row.decode("pending"),
            unregistered: try row.decode("unregistered"),
            overdueSeconds: max(0, try row.decode("overdue")),
            unpublishedSeconds: max(0, try row.decode("unpublished"))
        )
    }

    func markPublished(_ friendlyIds: [String]) async throws {
        try await database.query(
            "UPDATE waitpoints SET published_at = now() WHERE friendly_id = ANY(\(friendlyIds)) AND published_at IS NULL"
        )
    }

    /// An output as the `output` column holds it: its JSON text.
    private static func text(_ output: WaitpointOutput) throws -> String {
        String(decoding: try JSONEncoder.sessions.encode(output), as: UTF8.self)
    }

    private static func waitpoint(_ row: PostgresRow) throws -> Waitpoint {
        let io = ChannelIO(rawValue: try row.decode("io", as: String.self)) ?? .out
        let environmentId = try row.decode("environment_id", as: String.self)
        let session = try row.decode("session_friendly_id", as: String.self)
        let output = try row.decode("output", as: String?.self).flatMap {
            try? JSONDecoder.sessions.decode(WaitpointOutput.self, from: Data($0.utf8))
        }
        return Waitpoint(
            item: WaitpointItem(
                id: try row.decode("friendly_id"),
                status: WaitpointStatus(rawValue: try row.decode("status", as: String.self)) ?? .pending,
                runId: try row.decode("run_id"),
                session: session,
                io: io,
                output: output,
                timeoutAt: try row.decode("timeout_at", as: Date?.self),
                idempotencyKey: try row.decode("idempotency_key", as: String?.self),
                idempotencyKeyExpiresAt: try row.decode("idempotency_key_expires_at", as: Date?.self),
                tags: try row.decode("tags"),
                createdAt: try row.decode("created_at"),
                completedAt: try row.decode("completed_at", as: Date?.self),
                environmentId: environmentId
            ),
            channel: ChannelAddress(environmentId: environmentId, friendlyId: session, io: io),
            fromSeqNum: UInt64(try row.decode("from_seq_num", as: Int64.self))
        )
    }
}
