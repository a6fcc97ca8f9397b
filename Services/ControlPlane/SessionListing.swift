import ClickHouse
import Contracts
import Foundation
import Hummingbird
import ServiceKit

/// `GET /api/v1/sessions` (SPEC §4): filters and keyset pagination on ClickHouse `sessions_v1`
/// (filled by the replicator), newest first; the page's sessions are then read from PostgreSQL
/// by id, so they show their latest state.
struct SessionListing: Sendable {
    let clickhouse: ClickHouseClient
    let store: SessionStore

    struct Filters: Equatable {
        var types: [String] = []
        var tags: [String] = []
        var taskIdentifiers: [String] = []
        var externalIds: [String] = []
        var statuses: [SessionStatus] = []
        var from: Date?
        var to: Date?
        var pageSize = 20
        var after: Cursor?
        var before: Cursor?

        /// Whether the session, as PostgreSQL has it now, still matches the filters that
        /// ClickHouse's replicated copy (up to a second or two behind) matched. createdAt never
        /// changes, so the dates are not checked again.
        func matches(_ session: SessionRecord, at now: Date) -> Bool {
            func allows(_ wanted: [String], _ value: String?) -> Bool {
                wanted.isEmpty || value.map(wanted.containsBytes) == true
            }
            return allows(types, session.type) && allows(taskIdentifiers, session.taskIdentifier)
                && allows(externalIds, session.externalId)
                && (tags.isEmpty || session.tags.contains(where: tags.containsBytes))
                && (statuses.isEmpty || statuses.contains(session.status(at: now)))
        }
    }

    /// A position in a listing: the created-at millisecond and the session id.
    struct Cursor: Equatable {
        var createdAt: Int64
        var sessionId: String

        init(createdAt: Int64, sessionId: String) {
            self.createdAt = createdAt
            self.sessionId = sessionId
        }

        init?(_ text: String) {
            var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
            guard let data = Data(base64Encoded: base64),
                case let parts = String(decoding: data, as: UTF8.self).split(separator: ":", maxSplits: 1),
                parts.count == 2, let createdAt = Int64(parts[0]), !parts[1].isEmpty
            else { return nil }
            self.init(createdAt: createdAt, sessionId: String(parts[1]))
        }

        var text: String {
            Data("\(createdAt):\(sessionId)".utf8).base64EncodedString()
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
        }
    }

    func list(_ filters: Filters, in principal: Principal) async throws -> SessionPage {
        var conditions = [
            "organization_id = {organization:String}", "project_id = {project:String}",
            "environment_id = {environment:String}", "_is_deleted = 0",
        ]
        var parameters: [String: ClickHouseClient.Parameter] = [
            "organization": .text(principal.organizationId), "project": .text(principal.projectId),
            "environment": .text(principal.environmentId),
        ]
        func any(_ column: String, _ name: String, _ values: [String]) {
            guard !values.isEmpty else { return }
            conditions.append("\(column) IN {\(name):Array(String)}")
            parameters[name] = .strings(values)
        }
        any("type", "types", filters.types)
        any("task_identifier", "tasks", filters.taskIdentifiers)
        any("external_id", "externals", filters.externalIds)
        if !filters.tags.isEmpty {
            conditions.append("hasAny(tags, {tags:Array(String)})")
            parameters["tags"] = .strings(filters.tags)
        }
        if !filters.statuses.isEmpty {
            let clauses = Set(filters.statuses).sorted { $0.rawValue < $1.rawValue }.map { status in
                switch status {
                case .active: "(closed_at IS NULL AND (expires_at IS NULL OR expires_at > now64(3)))"
                case .closed: "(closed_at IS NOT NULL)"
                case .expired: "(closed_at IS NULL AND expires_at <= now64(3))"
                }
            }
            conditions.append("(" + clauses.joined(separator: " OR ") + ")")
        }
        if let from = filters.from {
            conditions.append("created_at >= fromUnixTimestamp64Milli({from:Int64}, 'UTC')")
            parameters["from"] = .text(String(Self.milliseconds(from)))
        }
        if let to = filters.to {
            conditions.append("created_at <= fromUnixTimestamp64Milli({to:Int64}, 'UTC')")
            parameters["to"] = .text(String(Self.milliseconds(to)))
        }
        let backwards = filters.before != nil
        let order = backwards ? "ASC" : "DESC"
        // Rows after `cursor` in the direction of travel.
        func rows(after cursor: Cursor?, limit: Int) async throws -> [Listed] {
            var conditions = conditions
            var parameters = parameters
            if let cursor {
                let comparison = backwards ? ">" : "<"
                conditions.append(
                    "(created_at, session_id) \(comparison) (fromUnixTimestamp64Milli({cursorAt:Int64}, 'UTC'), {cursorId:String})"
                )
                parameters["cursorAt"] = .text(String(cursor.createdAt))
                parameters["cursorId"] = .text(cursor.sessionId)
            }
            return try await clickhouse.query(
                """
                SELECT session_id, toUnixTimestamp64Milli(created_at) AS created_ms
                FROM sessions_v1 FINAL
                WHERE \(conditions.joined(separator: " AND "))
                ORDER BY created_at \(order), session_id \(order)
                LIMIT \(limit)
                """,
                parameters: parameters,
                as: Listed.self
            )
        }
        // ClickHouse's copy may be a moment behind: a session that no longer matches is left out
        // and the page is filled from the rows after it (a few rounds at most).
        let now = Date()  // one moment for the filters and the items' status
        var examined: [Listed] = []
        var kept: [SessionRecord] = []
        var hasMore = true
        for _ in 0..<Self.fillRounds where kept.count < filters.pageSize && hasMore {
            let wanted = filters.pageSize - kept.count
            let found = try await rows(
                after: examined.last?.cursor ?? filters.after ?? filters.before,
                limit: wanted + 1
            )
            hasMore = found.count > wanted
            let batch = found.prefix(wanted)
            let sessions = try await store.sessions(ids: batch.map(\.sessionId), environmentId: principal.environmentId)
            let byId = Dictionary(sessions.map { ($0.id, $0) }) { first, _ in first }
            examined += batch
            kept += batch.compactMap { byId[$0.sessionId] }.filter { filters.matches($0, at: now) }
        }
        if backwards {
            examined.reverse()
            kept.reverse()
        }
        let cursors = (first: examined.first.map(\.cursor), last: examined.last.map(\.cursor))
        // Newer sessions exist before a page reached going forward from a cursor, or when going
        // back found more; older ones after a page that found more, or one reached going back.
        let hasNewer = backwards ? hasMore : filters.after != nil
        let hasOlder = backwards ? true : hasMore
        return SessionPage(
            data: kept.map { $0.item(at: now) },
            pagination: .init(
                next: hasOlder ? cursors.last?.text : nil,
                previous: hasNewer ? cursors.first?.text : nil
            )
        )
    }

    /// How many times a page short of sessions that no longer match is filled from further rows.
    static let fillRounds = 4

    private struct Listed: Decodable {
        var sessionId: String
        var createdMs: Int64

        enum CodingKeys: String, CodingKey {
            case sessionId = "session_id"
            case createdMs = "created_ms"
        }

        var cursor: Cursor { Cursor(createdAt: createdMs, sessionId: sessionId) }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            sessionId = try container.decode(String.self, forKey: .sessionId)
            // ClickHouse writes 64-bit integers as JSON strings by default.
            if let number = try? container.decode(Int64.self, forKey: .createdMs) {
                createdMs = number
            } else {
                let text = try container.decode(String.self, forKey: .createdMs)
                guard let number = Int64(text) else {
                    throw DecodingError.dataCorruptedError(
                        forKey: .createdMs,
                        in: container,
                        debugDescription: "not a number"
                    )
                }
                createdMs = number
            }
        }
    }

    static func milliseconds(_ date: Date) -> Int64 { date.epochMilliseconds }

    // MARK: Query parsing

    /// Reads the filters of a list request; every problem is a 400 naming the parameter.
    static func filters(_ request: Request) throws -> Filters {
        var values: [String: [String]] = [:]
        // Decoded as a form sends it (`URLSearchParams`): `+` is a space.
        func decoded(_ raw: Substring) -> String {
            let text = raw.replacingOccurrences(of: "+", with: " ")
            return text.removingPercentEncoding ?? text
        }
        for pair in (request.uri.query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = decoded(parts[0])
            if name.isEmpty { continue }  // `?&page[size]=10`: nothing was named
            // Split where the query has a comma, before decoding: `%2C` is a comma inside a value.
            // Kept as given: a type or tag is stored untrimmed, so ` a` names a tag of its own.
            values[name, default: []] += (parts.count > 1 ? parts[1] : "").split(separator: ",").map(decoded)
                .filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        }
        let known: Set<String> = [
            "filter[type]", "filter[tags]", "filter[taskIdentifier]", "filter[externalId]", "filter[status]",
            "filter[createdAt][period]", "filter[createdAt][from]", "filter[createdAt][to]", "page[size]",
            "page[after]", "page[before]",
        ]
        if let unknown = values.keys.sorted().first(where: { !known.contains($0) }) {
            throw APIError(.badRequest, "Unknown query parameter \(unknown)")
        }
        func single(_ name: String) throws -> String? {
            guard let items = values[name] else { return nil }
            guard !items.isEmpty else { throw APIError(.badRequest, "Invalid \(name): it has no value") }
            guard items.count == 1 else { throw APIError(.badRequest, "Invalid \(name): give one value") }
            return items[0].trimmingCharacters(in: .whitespaces)
        }
        var filters = Filters()
        filters.types = values["filter[type]"] ?? []
        filters.tags = values["filter[tags]"] ?? []
        filters.taskIdentifiers = values["filter[taskIdentifier]"] ?? []
        // An externalId is stored trimmed, and statuses are words.
        filters.externalIds = (values["filter[externalId]"] ?? []).map { $0.trimmingCharacters(in: .whitespaces) }
        filters.statuses = try (values["filter[status]"] ?? []).map { text in
            guard let status = SessionStatus(rawValue: text.trimmingCharacters(in: .whitespaces).uppercased()) else {
                throw APIError(.badRequest, "Invalid filter[status]: use ACTIVE, CLOSED or EXPIRED")
            }
            return status
        }
        if let period = try single("filter[createdAt][period]") {
            let seconds = try DurationText.seconds(
                period,
                subject: "Invalid filter[createdAt][period]:",
                form: "use a duration like 30m, 24h or 7d"
            )
            filters.from = Date().addingTimeInterval(-seconds)
        }
        for (name, keyPath) in [("filter[createdAt][from]", \Filters.from), ("filter[createdAt][to]", \Filters.to)] {
            guard let text = try single(name) else { continue }
            guard
                let date = Int64(text).map({ Date(timeIntervalSince1970: Double($0) / 1000) })
                    // `+00:00` written unencoded reads as ` 00:00`.
                    ?? ISO8601.date(from: text.replacingOccurrences(of: " ", with: "+")),
                Date.supportedRange.contains(date)
            else {
                throw APIError(
                    .badRequest,
                    "Invalid \(name): use epoch milliseconds or an ISO-8601 date from 1970 to 2299"
                )
            }
            filters[keyPath: keyPath] = date
        }
        if let size = try single("page[size]") {
            guard let number = Int(size), (1...100).contains(number) else {
                throw APIError(.badRequest, "Invalid page[size]: must be a whole number from 1 to 100")
            }
            filters.pageSize = number
        }
        if let after = try single("page[after]") {
            guard let cursor = Cursor(after) else { throw APIError(.badRequest, "Invalid page[after] cursor") }
            filters.after = cursor
        }
        if let before = try single("page[before]") {
            guard let cursor = Cursor(before) else { throw APIError(.badRequest, "Invalid page[before] cursor") }
            filters.before = cursor
        }
        if filters.after != nil && filters.before != nil {
            throw APIError(.badRequest, "Give page[after] or page[before], not both")
        }
        return filters
    }
}
