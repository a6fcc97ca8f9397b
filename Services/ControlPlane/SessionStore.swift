import Contracts
import Foundation
import Logging
import Postgres
import ServiceKit

/// What a create request asks for, validated.
struct NewSession: Sendable {
    var type: String
    var externalId: String?
    var taskIdentifier: String?
    var tags: [String]
    var metadata: JSONValue?
    var triggerConfig: JSONValue?
    var expiresAt: Date?
}

/// What a PATCH asks to change; nil leaves a field as it is.
struct SessionChanges: Sendable {
    var tags: [String]?
    /// `.some(nil)` clears it.
    var metadata: JSONValue??
    /// `.some(nil)` clears it.
    var externalId: String??

    var isEmpty: Bool { tags == nil && metadata == nil && externalId == nil }
}

/// The `sessions` table. Every statement is scoped to one environment.
///
/// Each write also records its lifecycle event in `session_events_outbox`, in the same
/// statement, so an acknowledged write always has its event; ``SessionEventRelay`` publishes
/// the outbox to JetStream. Rows are read as PostgreSQL's own JSON (`to_jsonb`), decoded by
/// ``SessionRow`` — the one mapping from columns to ``SessionRecord``, shared with the relay.
struct SessionStore: Sendable {
    let database: PostgresClient
    /// Creates that arrive together are written by one statement (``Batcher``): PostgreSQL
    /// writes 2.6 times as many sessions a second in statements of eight as in one each.
    private let creates: Batcher<CreateRow, SessionRecord?>

    init(database: PostgresClient) {
        self.database = database
        creates = Batcher(
            concurrency: max(1, database.configuration.poolSize / 2),
            limit: 64,
            key: { row in row.externalId.map { Self.key(environmentId: row.environmentId, externalId: $0) } },
            // The statement refused the data (a constraint, a deadlock, a cancelled leader); a
            // lost connection is not one request's.
            isRequestError: { ($0 as? PostgresError)?.code == .queryFailed },
            logger: Logger(label: "control-plane"),
            run: { rows in try await Self.write(rows, database: database) }
        )
    }

    /// An externalId in its environment (environment ids hold no spaces).
    private static func key(environmentId: String, externalId: String) -> String {
        environmentId + " " + externalId
    }

    /// What a create did.
    enum CreateOutcome: Sendable {
        /// A new session (event `created`).
        case created
        /// The existing open session of that externalId, given a new trigger configuration
        /// (event `updated`).
        case reconfigured
        /// The existing session of that externalId, unchanged (no write, no event).
        case existing
    }

    /// Inserts a session, or — when `externalId` names an existing one — returns that one,
    /// replacing its trigger configuration when one is given, differs, and the session is still
    /// open. One atomic statement, so concurrent first creates agree on a single row. With
    /// `onlyTasks`, an existing session of another task is neither touched nor returned: the
    /// answer is nil.
    func create(
        _ session: NewSession,
        in environment: Principal,
        onlyTasks: [String]? = nil
    ) async throws -> (SessionRecord, CreateOutcome)? {
        // A rename can take the externalId's session away between the two statements below;
        // the name is free then, and the next attempt creates it.
        for _ in 0..<3 {
            if let outcome = try await upsert(session, in: environment, onlyTasks: onlyTasks) { return outcome }
        }
        throw APIError(.unavailable, "The session was renamed while it was being created; try again")
    }

    /// One attempt of ``create(_:in:onlyTasks:)``: `.some(nil)` when the caller may not have the
    /// existing session, nil when the named session was gone by the second statement.
    private func upsert(
        _ session: NewSession,
        in environment: Principal,
        onlyTasks: [String]?
    ) async throws -> (SessionRecord, CreateOutcome)?? {
        let id = Identifier.make()
        let written = try await creates.submit(
            CreateRow(
                id: id,
                externalId: session.externalId,
                type: session.type,
                taskIdentifier: session.taskIdentifier,
                tags: session.tags,
                metadata: session.metadata,
                triggerConfig: session.triggerConfig,
                organizationId: environment.organizationId,
                projectId: environment.projectId,
                environmentId: environment.environmentId,
                environmentType: environment.environmentType.rawValue,
                expiresAt: session.expiresAt.map(ISO8601.string(from:)),
                onlyTasks: onlyTasks
            )
        )
        if let record = written {
            return (record, record.id == id ? .created : .reconfigured)
        }
        // The externalId's session was left as it is: nothing to change, closed, expired, or of
        // a task the caller may not write. It was committed before the statement ended, so a
        // new statement sees it.
        guard let externalId = session.externalId,
            let existing = try await find(externalId, environmentId: environment.environmentId)
        else { return nil }
        guard onlyTasks.map({ tasks in existing.taskIdentifier.map(tasks.containsBytes) ?? false }) ?? true else {
            return .some(nil)
        }
        return (existing, .existing)
    }

    /// Inserts the sessions of `rows`, or updates the existing sessions their externalIds name (as
    /// ``create(_:in:onlyTasks:)`` says), in one statement with their events. Answers each row
    /// with the session it wrote, or nil when it left the existing one as it was.
    ///
    /// The rows are written in key order, so two batches wanting the same names cannot deadlock
    /// each other. (A batch can with a rename, which holds its row while it takes a name: see
    /// ``update(_:with:)``.)
    static func write(_ rows: [CreateRow], database: PostgresClient) async throws -> [SessionRecord?] {
        let input = String(decoding: try JSONEncoder().encode(rows), as: UTF8.self)
        let written = try await database.query(
            """
            WITH input AS (
                SELECT * FROM jsonb_to_recordset(\(input)::jsonb) AS input(
                    id text, external_id text, type text, task_identifier text, tags text[], metadata jsonb,
                    trigger_config jsonb, organization_id text, project_id text, runtime_environment_id text,
                    environment_type text, expires_at timestamptz, only_tasks text[]
                )
            ), written AS (
                INSERT INTO sessions (
                    id, friendly_id, external_id, type, task_identifier, tags, metadata, trigger_config,
                    organization_id, project_id, runtime_environment_id, environment_type, expires_at
                )
                SELECT id, 'session_' || id, external_id, type, task_identifier, tags, metadata, trigger_config,
                    organization_id, project_id, runtime_environment_id, environment_type, expires_at
                FROM input ORDER BY runtime_environment_id, external_id
                ON CONFLICT (runtime_environment_id, external_id) DO UPDATE SET
                    trigger_config = EXCLUDED.trigger_config,
                    updated_at = GREATEST(statement_timestamp(), sessions.updated_at)
                WHERE (
                        SELECT input.only_tasks IS NULL OR sessions.task_identifier = ANY(input.only_tasks)
                        FROM input WHERE input.id = EXCLUDED.id
                    )
                    AND sessions.closed_at IS NULL AND (sessions.expires_at IS NULL OR sessions.expires_at > now())
                    AND EXCLUDED.trigger_config IS NOT NULL
                    AND EXCLUDED.trigger_config IS DISTINCT FROM sessions.trigger_config
                RETURNING *
            ), event AS (
                INSERT INTO session_events_outbox (kind, session_row)
                SELECT CASE WHEN written.id IN (SELECT id FROM input) THEN 'created' ELSE 'updated' END,
                    to_jsonb(written)
                FROM written
            )
            SELECT to_jsonb(written)::text AS session_row FROM written
            """
        ).map(SessionRow.decode)
        let byId = Dictionary(written.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let byName = Dictionary(
            written.compactMap { record in
                record.externalId.map { (Self.key(environmentId: record.environmentId, externalId: $0), record) }
            },
            uniquingKeysWith: { first, _ in first }
        )
        return rows.map { row in
            byId[row.id]
                ?? row.externalId.flatMap { byName[Self.key(environmentId: row.environmentId, externalId: $0)] }
        }
    }

    /// The session named by friendlyId (`session_…`) or externalId. The name is trimmed, as an
    /// externalId is when stored, so the name a session was created with finds it.
    func find(_ key: String, environmentId: String) async throws -> SessionRecord? {
        let key = key.trimmingCharacters(in: .whitespacesAndNewlines)
        let rows =
            if key.hasPrefix("session_") {
                try await database.query(
                    """
                    SELECT to_jsonb(sessions)::text AS session_row FROM sessions
                    WHERE runtime_environment_id = \(environmentId) AND friendly_id = \(key)
                    """
                )
            } else {
                try await database.query(
                    """
                    SELECT to_jsonb(sessions)::text AS session_row FROM sessions
                    WHERE runtime_environment_id = \(environmentId) AND external_id = \(key)
                    """
                )
            }
        return try rows.first.map(SessionRow.decode)
    }

    /// The sessions with these internal ids in the environment, in no particular order.
    func sessions(ids: [String], environmentId: String) async throws -> [SessionRecord] {
        guard !ids.isEmpty else { return [] }
        return try await database.query(
            """
            SELECT to_jsonb(sessions)::text AS session_row FROM sessions
            WHERE runtime_environment_id = \(environmentId) AND id = ANY(\(ids))
            """
        ).map(SessionRow.decode)
    }

    /// Applies `changes`; nil when the session no longer exists. Also returns the externalId the
    /// session had just before (read under the row's lock, so concurrent renames each name the
    /// one they replaced).
    ///
    /// A rename holds its row while it takes the new name. A batch of creates can hold that name
    /// while it waits for the row (one of its creates names the row's old name); PostgreSQL then
    /// stops one of the two, and a stopped rename tries again.
    ///
    /// - Throws: ``APIError`` 409 when the new externalId is taken in this environment.
    func update(
        _ session: SessionRecord,
        with changes: SessionChanges
    ) async throws -> (SessionRecord, previousExternalId: String?)? {
        for _ in 0..<2 {
            do {
                return try await attemptUpdate(session, with: changes)
            } catch let error as PostgresError where error.sqlState == PostgresError.deadlockDetected {
                continue
            }
        }
        return try await attemptUpdate(session, with: changes)
    }

    private func attemptUpdate(
        _ session: SessionRecord,
        with changes: SessionChanges
    ) async throws -> (SessionRecord, previousExternalId: String?)? {
        let metadata = changes.metadata.map { $0.map(JSONText.init) }
        do {
            return try await database.withTransaction { connection in
                let locked = try await connection.query(
                    """
                    SELECT external_id FROM sessions
                    WHERE runtime_environment_id = \(session.environmentId) AND id = \(session.id) FOR UPDATE
                    """
                )
                guard let lockedRow = locked.first else { return nil }
                let previous = try lockedRow.decode("external_id", as: String?.self)
                let rows = try await connection.query(
                    """
                    WITH written AS (
                        UPDATE sessions SET
                            tags = CASE WHEN \(changes.tags != nil) THEN \(changes.tags ?? [])::text[] ELSE tags END,
                            metadata = CASE WHEN \(metadata != nil) THEN \(metadata ?? nil)::jsonb ELSE metadata END,
                            external_id = CASE
                                WHEN \(changes.externalId != nil) THEN \(changes.externalId ?? nil) ELSE external_id END,
                            updated_at = GREATEST(statement_timestamp(), updated_at)
                        WHERE runtime_environment_id = \(session.environmentId) AND id = \(session.id)
                        RETURNING *
                    ), event AS (
                        INSERT INTO session_events_outbox (kind, session_row, previous_external_id)
                        SELECT 'updated', to_jsonb(written),
                            CASE WHEN written.external_id IS DISTINCT FROM \(previous)::text THEN \(previous)::text END
                        FROM written
                    )
                    SELECT to_jsonb(written)::text AS session_row FROM written
                    """
                )
                return try rows.first.map { (try SessionRow.decode($0), previous) }
            }
        } catch let error as PostgresError where error.sqlState == PostgresError.uniqueViolation {
            throw APIError(.conflict, "A session with this externalId already exists in this environment")
        }
    }

    /// Closes the session unless it already is; returns the row and whether this call closed it.
    /// The first close wins: concurrent closes all return its closedAt and reason.
    ///
    /// Times are never earlier than the row's `updated_at`: `now()` is when the transaction
    /// began, so a write that waited for the row's lock behind another would carry an earlier
    /// time than the one it follows (an updatedAt before closedAt). The same holds in every write.
    func close(_ session: SessionRecord, reason: String?) async throws -> (SessionRecord, didClose: Bool)? {
        let closed = try await database.query(
            """
            WITH written AS (
                UPDATE sessions SET closed_at = GREATEST(statement_timestamp(), updated_at), closed_reason = \(reason),
                    updated_at = GREATEST(statement_timestamp(), updated_at)
                WHERE runtime_environment_id = \(session.environmentId) AND id = \(session.id) AND closed_at IS NULL
                RETURNING *
            ), event AS (
                INSERT INTO session_events_outbox (kind, session_row)
                SELECT 'closed', to_jsonb(written) FROM written
            )
            SELECT to_jsonb(written)::text AS session_row FROM written
            """
        )
        if let row = closed.first { return (try SessionRow.decode(row), true) }
        return try await find(session.friendlyId, environmentId: session.environmentId).map { ($0, false) }
    }
}

/// A `sessions` row as `to_jsonb` writes it (snake_case keys, ISO timestamps with offsets).
struct SessionRow: Decodable {
    var id: String
    var friendlyId: String
    var externalId: String?
    var type: String
    var taskIdentifier: String?
    var tags: [String]
    var metadata: JSONValue?
    var triggerConfig: JSONValue?
    var organizationId: String
    var projectId: String
    var runtimeEnvironmentId: String
    var environmentType: String
    var closedAt: Date?
    var closedReason: String?
    var expiresAt: Date?
    var createdAt: Date
    var updatedAt: Date

    /// Spelled out: deriving them (`convertFromSnakeCase`) cost more than the rest of the decode.
    enum CodingKeys: String, CodingKey {
        case id, type, tags, metadata
        case friendlyId = "friendly_id"
        case externalId = "external_id"
        case taskIdentifier = "task_identifier"
        case triggerConfig = "trigger_config"
        case organizationId = "organization_id"
        case projectId = "project_id"
        case runtimeEnvironmentId = "runtime_environment_id"
        case environmentType = "environment_type"
        case closedAt = "closed_at"
        case closedReason = "closed_reason"
        case expiresAt = "expires_at"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }

    var record: SessionRecord {
        SessionRecord(
            id: id,
            friendlyId: friendlyId,
            externalId: externalId,
            type: type,
            taskIdentifier: taskIdentifier,
            tags: tags,
            metadata: metadata == .null ? nil : metadata,
            triggerConfig: triggerConfig == .null ? nil : triggerConfig,
            organizationId: organizationId,
            projectId: projectId,
            environmentId: runtimeEnvironmentId,
            environmentType: EnvironmentType(rawValue: environmentType) ?? .development,
            closedAt: closedAt,
            closedReason: closedReason,
            expiresAt: expiresAt,
            createdAt: createdAt,
            updatedAt: updatedAt
        )
    }

    /// Decodes the `session_row` column of a result.
    static func decode(_ row: PostgresRow) throws -> SessionRecord {
        try decode(json: try row.decode("session_row", as: String.self))
    }

    static func decode(json: String) throws -> SessionRecord {
        try JSONDecoder.sessions.decode(SessionRow.self, from: Data(json.utf8)).record
    }
}

/// One session to create, as ``SessionStore``'s create statement reads it (`jsonb_to_recordset`).
struct CreateRow: Encodable, Sendable {
    var id: String
    var externalId: String?
    var type: String
    var taskIdentifier: String?
    var tags: [String]
    var metadata: JSONValue?
    var triggerConfig: JSONValue?
    var organizationId: String
    var projectId: String
    var environmentId: String
    var environmentType: String
    var expiresAt: String?
    /// Set when the caller may write only these tasks' sessions: an existing session of another
    /// task is left alone.
    var onlyTasks: [String]?

    enum CodingKeys: String, CodingKey {
        case id, type, tags, metadata
        case externalId = "external_id"
        case taskIdentifier = "task_identifier"
        case triggerConfig = "trigger_config"
        case organizationId = "organization_id"
        case projectId = "project_id"
        case environmentId = "runtime_environment_id"
        case environmentType = "environment_type"
        case expiresAt = "expires_at"
        case onlyTasks = "only_tasks"
    }
}

/// A JSON value sent as a `jsonb` parameter.
struct JSONText: PostgresEncodable {
    var value: JSONValue

    init(_ value: JSONValue) { self.value = value }

    var postgresText: String {
        String(decoding: (try? JSONEncoder().encode(value)) ?? Data("null".utf8), as: UTF8.self)
    }
}
