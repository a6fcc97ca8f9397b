import ClickHouse
import Contracts
import Foundation
import Postgres

/// ClickHouse `sessions_v1`: one row per session version, `ReplacingMergeTree(_version,
/// _is_deleted)` keeping the highest commit LSN, so replays are harmless.
enum SessionsTable {
    static let name = "sessions_v1"

    /// Created by the replicator on start (idempotent).
    static let ddl = """
        CREATE TABLE IF NOT EXISTS sessions_v1 (
            environment_id String,
            organization_id String,
            project_id String,
            session_id String,
            environment_type LowCardinality(String),
            friendly_id String,
            external_id String DEFAULT '',
            type LowCardinality(String),
            task_identifier String DEFAULT '',
            tags Array(String) CODEC(ZSTD(1)),
            metadata String DEFAULT '',
            closed_at Nullable(DateTime64(3, 'UTC')),
            closed_reason String DEFAULT '',
            expires_at Nullable(DateTime64(3, 'UTC')),
            created_at DateTime64(3, 'UTC'),
            updated_at DateTime64(3, 'UTC'),
            _version UInt64,
            _is_deleted UInt8 DEFAULT 0,
            INDEX tags_index tags TYPE bloom_filter(0.01) GRANULARITY 4
        )
        ENGINE = ReplacingMergeTree(_version, _is_deleted)
        PARTITION BY toYYYYMM(created_at)
        ORDER BY (organization_id, project_id, environment_id, created_at, session_id)
        """

    static let columns = [
        "environment_id", "organization_id", "project_id", "session_id", "environment_type", "friendly_id",
        "external_id", "type", "task_identifier", "tags", "metadata", "closed_at", "closed_reason", "expires_at",
        "created_at", "updated_at", "_version", "_is_deleted",
    ]

    /// A `sessions` row as ClickHouse stores it.
    struct Row: Equatable, Sendable {
        var sessionId: String
        var sortKey: [String]
        var values: [JSONCell]
        var version: UInt64
    }

    enum JSONCell: Equatable, Sendable {
        case string(String)
        case strings([String])
        case number(UInt64)
        case null

        var json: String {
            switch self {
            case .string(let text): JSONString.quoted(text)
            case .strings(let items): "[" + items.map(JSONString.quoted).joined(separator: ",") + "]"
            case .number(let value): String(value)
            case .null: "null"
            }
        }
    }

    /// Maps a replicated row (column name → text value) to its ClickHouse row.
    static func row(_ columns: [String: String?], version: LSN, deleted: Bool) throws -> Row {
        func text(_ name: String) -> String? { columns[name] ?? nil }
        func required(_ name: String) throws -> String {
            guard let value = text(name) else { throw PgOutputError(description: "sessions row without \(name)") }
            return value
        }
        func time(_ name: String) throws -> JSONCell {
            guard let value = text(name) else { return .null }
            guard let date = PostgresTime.date(value) else {
                throw PgOutputError(description: "unreadable \(name) timestamp")
            }
            return .string(PostgresTime.clickHouse(date))
        }
        let id = try required("id")
        let organization = try required("organization_id")
        let project = try required("project_id")
        let environment = try required("runtime_environment_id")
        let created = try time("created_at")
        guard case .string(let createdText) = created else {
            throw PgOutputError(description: "sessions row without created_at")
        }
        let metadata = text("metadata").map { "{\"data\":\($0)}" } ?? "{\"data\":null}"
        return Row(
            sessionId: id,
            sortKey: [organization, project, environment, createdText, id],
            values: [
                .string(environment), .string(organization), .string(project), .string(id),
                .string(try required("environment_type")), .string(try required("friendly_id")),
                .string(text("external_id") ?? ""), .string(try required("type")),
                .string(text("task_identifier") ?? ""),
                .strings(text("tags").flatMap([String].init(postgresText:)) ?? []),
                .string(metadata), try time("closed_at"), .string(text("closed_reason") ?? ""), try time("expires_at"),
                created, try time("updated_at"), .number(version.rawValue), .number(deleted ? 1 : 0),
            ],
            version: version.rawValue
        )
    }

    /// `JSONCompactEachRowWithNames`: the names, then one array per row, sorted by the table's key.
    static func body(_ rows: [Row]) -> Data {
        var text = "[" + columns.map { "\"\($0)\"" }.joined(separator: ",") + "]\n"
        for row in rows.sorted(by: { $0.sortKey.lexicographicallyPrecedes($1.sortKey) }) {
            text += "[" + row.values.map(\.json).joined(separator: ",") + "]\n"
        }
        return Data(text.utf8)
    }
}

/// `timestamptz` text as the replication stream sends it (`2026-11-28 10:00:00.123+00`; the
/// columns keep milliseconds, and the stream's session is in UTC, though any offset is read),
/// and ClickHouse's `DateTime64(3, 'UTC')` text. Both go through ``ISO8601``, as the API's dates do.
enum PostgresTime {
    static func date(_ text: String) -> Date? {
        var bytes = Array(text.utf8)
        guard bytes.count > 19, bytes[10] == UInt8(ascii: " ") else { return nil }
        bytes[10] = UInt8(ascii: "T")
        // A whole-hour offset (`+00`, `-05`) as ISO-8601 writes it (`+00:00`).
        let sign = bytes[bytes.count - 3]
        if sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { bytes += Array(":00".utf8) }
        return ISO8601.date(from: String(decoding: bytes, as: UTF8.self))
    }

    static func clickHouse(_ date: Date) -> String {
        // `2026-11-28T10:00:00.123Z` → `2026-11-28 10:00:00.123`
        var bytes = Array(ISO8601.string(from: date).utf8.dropLast())
        bytes[10] = UInt8(ascii: " ")
        return String(decoding: bytes, as: UTF8.self)
    }
}
