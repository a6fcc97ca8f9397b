import ArgumentParser
import Contracts
import Foundation

struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a session (with --external-id: the existing one when it exists)."
    )

    @OptionGroup var api: APIOptions
    @Option(help: "The session's type, e.g. chat.agent.") var type: String
    @Option(help: "Your own id for it; creating again with it returns the same session.") var externalId: String?
    @Option(help: "The task it belongs to.") var task: String?
    @Option(help: "A tag (repeat for more, at most 10).") var tag: [String] = []
    @Option(help: "Metadata as a JSON object.") var metadata: String?
    @Option(help: "When it expires (ISO 8601).") var expiresAt: String?

    func run() async throws {
        try await reporting {
            var body: [String: JSONValue] = ["type": .string(type)]
            if let externalId { body["externalId"] = .string(externalId) }
            if let task { body["taskIdentifier"] = .string(task) }
            if !tag.isEmpty { body["tags"] = .array(tag.map(JSONValue.string)) }
            if let metadata { body["metadata"] = try parseJSON(metadata, option: "--metadata") }
            if let expiresAt { body["expiresAt"] = .string(expiresAt) }
            let (created, raw) = try await api.client().json(
                CreatedSession.self,
                "POST",
                "/api/v1/sessions",
                body: JSONValue.object(body)
            )
            if api.json { return say(String(decoding: raw, as: UTF8.self)) }
            say("\(created.session.id) \(created.isCached ? "already existed" : "created")")
            say(describe(created.session))
            say("  publicAccessToken \(created.publicAccessToken)")
        }
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a session.")

    @OptionGroup var api: APIOptions
    @Argument(help: "session_… id or externalId.") var session: String

    func run() async throws {
        try await reporting {
            let (item, raw) = try await api.client().json(
                SessionItem.self,
                "GET",
                "/api/v1/sessions/\(try SessionsClient.segment(session, "the session"))"
            )
            say(api.json ? String(decoding: raw, as: UTF8.self) : "\(item.id)\n" + describe(item))
        }
    }
}

struct Close: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Close a session: appends stop, reads keep working. Closing again changes nothing."
    )

    @OptionGroup var api: APIOptions
    @Argument(help: "session_… id or externalId.") var session: String
    @Option(help: "Why (at most 256 characters).") var reason: String?

    func run() async throws {
        try await reporting {
            let body: JSONValue = .object(reason.map { ["reason": .string($0)] } ?? [:])
            let (item, raw) = try await api.client().json(
                SessionItem.self,
                "POST",
                "/api/v1/sessions/\(try SessionsClient.segment(session, "the session"))/close",
                body: body
            )
            if api.json { return say(String(decoding: raw, as: UTF8.self)) }
            let when = item.closedAt.map(ISO8601.string(from:)) ?? "-"
            say("\(item.id) closed at \(when)\(item.closedReason.map { ": \($0)" } ?? "")")
        }
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List sessions, newest first.")

    @OptionGroup var api: APIOptions
    @Option(help: "Only this type (repeat for any of several).") var type: [String] = []
    @Option(help: "Only sessions with this tag (repeat for any of several).") var tag: [String] = []
    @Option(help: "Only this task (repeat for any of several).") var task: [String] = []
    @Option(help: "Only this externalId (repeat for any of several).") var externalId: [String] = []
    @Option(help: "Only this status: active, closed or expired (repeat for several).") var status: [String] = []
    @Option(help: "Only sessions created within this period, e.g. 30m, 24h, 7d.") var since: String?
    @Option(parsing: .unconditional, help: "Show at most this many (default 20).") var limit = 20
    @Option(help: "Continue after this cursor (printed at the end of a listing).") var after: String?
    @Option(help: "Go back before this cursor.") var before: String?

    /// The command that lists the next page: these filters and limit, from `cursor`.
    func continuation(_ direction: String, _ cursor: String) -> String {
        var arguments = ["sessionsctl", "list"]
        for (option, values) in [("--type", type), ("--tag", tag), ("--task", task), ("--external-id", externalId)]
            + [("--status", status), ("--since", since.map { [$0] } ?? [])]
        {
            for value in values { arguments += [option, value] }
        }
        if limit != 20 { arguments += ["--limit", String(limit)] }
        if let url = api.url { arguments += ["--url", url] }
        arguments += [direction, cursor]
        return arguments.map { argument in
            // Quoted for a POSIX shell unless it is plainly safe.
            argument.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_./:=,@%+".contains($0)) }
                ? argument : "'" + argument.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
        }.joined(separator: " ")
    }

    func validate() throws {
        guard limit >= 1 else { throw ValidationError("--limit must be at least 1") }
        if after != nil && before != nil { throw ValidationError("use either --after or --before") }
    }

    func run() async throws {
        try await reporting {
            let client = try api.client()
            var filters: [(String, String)] = []
            for (name, values) in [("type", type), ("tags", tag), ("taskIdentifier", task), ("externalId", externalId)]
            where !values.isEmpty {
                filters.append(("filter[\(name)]", values.joined(separator: ",")))
            }
            if !status.isEmpty {
                filters.append(("filter[status]", status.map { $0.uppercased() }.joined(separator: ",")))
            }
            if let since { filters.append(("filter[createdAt][period]", since)) }
            var items: [SessionItem] = []
            var cursor = after.map { ("page[after]", $0) } ?? before.map { ("page[before]", $0) }
            var combined: SessionPage.Pagination?
            repeat {
                let size = min(100, limit - items.count)
                let query = filters + [("page[size]", String(size))] + (cursor.map { [$0] } ?? [])
                let (page, _) = try await client.json(SessionPage.self, "GET", "/api/v1/sessions", query: query)
                // Newest first: going back, each page holds newer sessions than the ones before.
                if before == nil {
                    items += page.data
                    combined = .init(
                        next: page.pagination.next,
                        previous: combined?.previous ?? page.pagination.previous
                    )
                } else {
                    items = page.data + items
                    combined = .init(next: combined?.next ?? page.pagination.next, previous: page.pagination.previous)
                }
                let next = before == nil ? page.pagination.next : page.pagination.previous
                cursor = next.map { (before == nil ? "page[after]" : "page[before]", $0) }
                if page.data.isEmpty { break }
            } while items.count < limit && cursor != nil
            let pagination = combined ?? SessionPage.Pagination()
            if api.json {
                let page = SessionPage(data: items, pagination: pagination)
                return say(String(decoding: try JSONEncoder.sessions.encode(page), as: UTF8.self))
            }
            say(
                table(
                    ["ID", "EXTERNAL ID", "TYPE", "TASK", "STATUS", "TAGS", "CREATED"],
                    items.map {
                        [
                            $0.id, $0.externalId ?? "-", $0.type, $0.taskIdentifier ?? "-", $0.status.rawValue,
                            $0.tags.isEmpty ? "-" : $0.tags.joined(separator: ","), ISO8601.string(from: $0.createdAt),
                        ]
                    }
                )
            )
            if let next = before == nil ? pagination.next : pagination.previous {
                note("more: " + continuation(before == nil ? "--after" : "--before", next))
            }
        }
    }
}

/// A session's fields, one per line, for people.
func describe(_ item: SessionItem) -> String {
    var lines: [(String, String)] = [
        ("externalId", item.externalId ?? "-"), ("type", item.type), ("task", item.taskIdentifier ?? "-"),
        ("status", item.status.rawValue), ("tags", item.tags.isEmpty ? "-" : item.tags.joined(separator: ", ")),
    ]
    if let metadata = item.metadata, let text = try? JSONEncoder.sessions.encode(metadata) {
        lines.append(("metadata", String(decoding: text, as: UTF8.self)))
    }
    lines.append(("createdAt", ISO8601.string(from: item.createdAt)))
    if let expiresAt = item.expiresAt { lines.append(("expiresAt", ISO8601.string(from: expiresAt))) }
    if let closedAt = item.closedAt {
        lines.append(("closedAt", ISO8601.string(from: closedAt) + (item.closedReason.map { " (\($0))" } ?? "")))
    }
    return lines.map { "  \($0.0.padding(toLength: 17, withPad: " ", startingAt: 0)) \($0.1)" }
        .joined(separator: "\n")
}

/// Columns padded to their widest cell.
func table(_ header: [String], _ rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
    return all.map { row in
        row.enumerated().map { column, cell in
            column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }.joined(separator: "\n")
}

/// `text` as JSON, or a usage error naming the option.
func parseJSON(_ text: String, option: String) throws -> JSONValue {
    guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) else {
        throw CLIError(.usage, "\(option) is not valid JSON")
    }
    return value
}
