import Contracts
import Foundation
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
}

/// The `sessions` table. Every statement is scoped to one environment.
struct SessionStore: Sendable {
    let database: PostgresClient

    /// Inserts a session, or — when `externalId` names an existing one — returns that one
    /// (updating only its trigger configuration while it is open). One atomic statement, so
    /// concurrent first creates agree on a single row.
    func create(_ session: NewSession, in environment: Principal) async throws -> (SessionRecord, isNew: Bool) {
        let id = Identifier.make()
        let rows = try await database.query(
            """
            INSERT INTO sessions (
                id, friendly_id, external_id, type, task_identifier, tags, metadata, trigger_config,
                organization_id, project_id, runtime_environment_id, environment_type, expires_at
            ) VALUES (
                \(id), \("session_" + id), \(session.externalId), \(session.type), \(session.taskIdentifier),
                \(session.tags), \(session.metadata.map(JSONText.init))::jsonb,
                \(session.triggerConfig.map(JSONText.init))::jsonb,
                \(environment.organizationId), \(environment.projectId), \(environment.environmentId),
                \(environment.environmentType.rawValue), \(session.expiresAt)
            )
            ON CONFLICT (runtime_environment_id, external_id) DO UPDATE SET
                trigger_config = CASE
                    WHEN sessions.closed_at IS NULL AND EXCLUDED.trigger_config IS NOT NULL
                    THEN EXCLUDED.trigger_config ELSE sessions.trigger_config END,
                updated_at = CASE
                    WHEN sessions.closed_at IS NULL AND EXCLUDED.trigger_config IS NOT NULL
                    THEN now() ELSE sessions.updated_at END
            RETURNING \(unescaped: Self.columns)
            """
        )
        let record = try Self.decode(rows[0])
        return (record, record.id == id)
    }

    /// The session named by friendlyId (`session_…`) or externalId.
    func find(_ key: String, environmentId: String) async throws -> SessionRecord? {
        let rows =
            if key.hasPrefix("session_") {
                try await database.query(
                    """
                    SELECT \(unescaped: Self.columns) FROM sessions
                    WHERE runtime_environment_id = \(environmentId) AND friendly_id = \(key)
                    """
                )
            } else {
                try await database.query(
                    """
                    SELECT \(unescaped: Self.columns) FROM sessions
                    WHERE runtime_environment_id = \(environmentId) AND external_id = \(key)
                    """
                )
            }
        return try rows.first.map(Self.decode)
    }

    /// Applies `changes`; nil when the session no longer exists.
    ///
    /// - Throws: ``APIError`` 409 when the new externalId is taken in this environment.
    func update(_ session: SessionRecord, with changes: SessionChanges) async throws -> SessionRecord? {
        let metadata = changes.metadata.map { $0.map(JSONText.init) }
        do {
            let rows = try await database.query(
                """
                UPDATE sessions SET
                    tags = CASE WHEN \(changes.tags != nil) THEN \(changes.tags ?? [])::text[] ELSE tags END,
                    metadata = CASE WHEN \(metadata != nil) THEN \(metadata ?? nil)::jsonb ELSE metadata END,
                    external_id = CASE WHEN \(changes.externalId != nil) THEN \(changes.externalId ?? nil) ELSE external_id END,
                    updated_at = now()
                WHERE runtime_environment_id = \(session.environmentId) AND id = \(session.id)
                RETURNING \(unescaped: Self.columns)
                """
            )
            return try rows.first.map(Self.decode)
        } catch let error as PostgresError where error.sqlState == PostgresError.uniqueViolation {
            throw APIError(.conflict, "A session with this externalId already exists in this environment")
        }
    }

    /// Closes the session unless it already is; returns the row and whether this call closed it.
    /// The first close wins: concurrent closes all return its closedAt and reason.
    func close(_ session: SessionRecord, reason: String?) async throws -> (SessionRecord, didClose: Bool)? {
        let closed = try await database.query(
            """
            UPDATE sessions SET closed_at = now(), closed_reason = \(reason), updated_at = now()
            WHERE runtime_environment_id = \(session.environmentId) AND id = \(session.id) AND closed_at IS NULL
            RETURNING \(unescaped: Self.columns)
            """
        )
        if let row = closed.first { return (try Self.decode(row), true) }
        return try await find(session.friendlyId, environmentId: session.environmentId).map { ($0, false) }
    }

    private static let columns: StaticString = """
        id, friendly_id, external_id, type, task_identifier, tags, metadata::text AS metadata,
        trigger_config::text AS trigger_config, organization_id, project_id, runtime_environment_id,
        environment_type, closed_at, closed_reason, expires_at, created_at, updated_at
        """

    private static func decode(_ row: PostgresRow) throws -> SessionRecord {
        func json(_ column: String) throws -> JSONValue? {
            try row.decode(column, as: String?.self).map {
                try JSONDecoder().decode(JSONValue.self, from: Data($0.utf8))
            }
        }
        return SessionRecord(
            id: try row.decode("id"),
            friendlyId: try row.decode("friendly_id"),
            externalId: try row.decode("external_id", as: String?.self),
            type: try row.decode("type"),
            taskIdentifier: try row.decode("task_identifier", as: String?.self),
            tags: try row.decode("tags"),
            metadata: try json("metadata"),
            triggerConfig: try json("trigger_config"),
            organizationId: try row.decode("organization_id"),
            projectId: try row.decode("project_id"),
            environmentId: try row.decode("runtime_environment_id"),
            environmentType: EnvironmentType(rawValue: try row.decode("environment_type")) ?? .development,
            closedAt: try row.decode("closed_at", as: Date?.self),
            closedReason: try row.decode("closed_reason", as: String?.self),
            expiresAt: try row.decode("expires_at", as: Date?.self),
            createdAt: try row.decode("created_at"),
            updatedAt: try row.decode("updated_at")
        )
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
