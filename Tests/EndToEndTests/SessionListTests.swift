import ClickHouse
import Contracts
import Foundation
import HTTPClient
import Postgres
import ServiceKit
import TestSupport
import Testing

@Suite(.timeLimit(.minutes(2))) struct SessionListTests {
    func list(
        _ stack: ServicesFixture,
        _ query: String,
        token: String? = nil
    ) async throws -> (Int, SessionPage?, String) {
        let response = try await stack.http.execute(
            HTTPRequest(
                url: stack.controlPlane.baseURL + "/api/v1/sessions?" + query,
                headers: ["Authorization": "Bearer \(token ?? stack.apiKey)"]
            )
        )
        let text = String(decoding: response.body, as: UTF8.self)
        return (response.status, try? JSONDecoder.sessions.decode(SessionPage.self, from: response.body), text)
    }

    /// Sessions made by the API, visible in listings once replicated.
    func makeSessions(_ stack: ServicesFixture, _ bodies: [[String: JSONValue]]) async throws -> [String] {
        var ids: [String] = []
        for body in bodies {
            let response = try await stack.http.execute(
                HTTPRequest(
                    method: "POST",
                    url: stack.controlPlane.baseURL + "/api/v1/sessions",
                    headers: ["Authorization": "Bearer \(stack.apiKey)", "Content-Type": "application/json"],
                    body: try JSONEncoder().encode(body)
                )
            )
            ids.append(try JSONDecoder.sessions.decode(SessionItem.self, from: response.body).id)
        }
        return ids
    }

    @Test func filtersSelectTheRightSessions() async throws {
        let stack = try await ServicesFixture.shared.value
        let type = TestServers.uniqueName("type")
        let ids = try await makeSessions(
            stack,
            [
                [
                    "type": .string(type), "tags": ["red"], "taskIdentifier": "alpha",
                    "externalId": .string(type + "-a"),
                ],
                ["type": .string(type), "tags": ["blue", "green"], "taskIdentifier": "beta"],
                ["type": .string(type), "tags": ["green"], "taskIdentifier": "alpha"],
            ]
        )
        _ = try await stack.http.execute(
            HTTPRequest(
                method: "POST",
                url: stack.controlPlane.baseURL + "/api/v1/sessions/\(ids[2])/close",
                headers: ["Authorization": "Bearer \(stack.apiKey)", "Content-Type": "application/json"],
                body: Data("{}".utf8)
            )
        )
        let replicated = try await TestServers.waitUntil(timeout: .seconds(20)) {
            try await list(stack, "filter[type]=\(type)").1?.data.count == 3
        }
        #expect(replicated)
        func listed(_ query: String) async throws -> Set<String> {
            Set(try await list(stack, "filter[type]=\(type)&" + query).1?.data.map(\.id) ?? ["failed"])
        }
        #expect(try await listed("filter[tags]=red,blue") == [ids[0], ids[1]], "any of the tags")
        #expect(try await listed("filter[tags]=red&filter[tags]=green") == Set(ids), "repeated keys")
        #expect(try await listed("filter[taskIdentifier]=alpha") == [ids[0], ids[2]])
        #expect(try await listed("filter[externalId]=\(type)-a") == [ids[0]])
        // Closed a moment ago: the item shows CLOSED even if ClickHouse has not caught up.
        #expect(try await TestServers.waitUntil { try await listed("filter[status]=CLOSED") == [ids[2]] })
        #expect(try await listed("filter[status]=ACTIVE") == [ids[0], ids[1]])
        #expect(try await listed("filter[createdAt][period]=1h") == Set(ids))
        #expect(try await listed("filter[createdAt][to]=2000-01-01T00:00:00Z").isEmpty)
        #expect(try await listed("filter[createdAt][from]=2000-01-01T00:00:00+00:00") == Set(ids), "+ left unencoded")
        let newestFirst = try await list(stack, "filter[type]=\(type)").1?.data.map(\.id)
        #expect(newestFirst == ids.reversed())
        let byTaskToken = try await AccessTokenFixture.token(stack, scopes: ["read:tasks:beta"])
        let scoped = try await list(stack, "filter[type]=\(type)", token: byTaskToken)
        #expect(scoped.1?.data.map(\.id) == [ids[1]], "read:tasks:{id} sees that task's sessions only")
        let noRead = try await AccessTokenFixture.token(stack, scopes: ["write:sessions"])
        #expect(try await list(stack, "filter[type]=\(type)", token: noRead).0 == 403)
    }

    /// "café" as one scalar and as "e" with a combining accent are one string to Swift's `==`
    /// but two tasks to PostgreSQL and ClickHouse: a task scope lists only its own.
    @Test func aTaskScopeListsOnlyItsOwnTaskByteForByte() async throws {
        let stack = try await ServicesFixture.shared.value
        let type = TestServers.uniqueName("caf")
        let composed = type + "\u{E9}"
        let decomposed = type + "e\u{301}"
        let ids = try await makeSessions(
            stack,
            [composed, decomposed].map { ["type": .string(type), "taskIdentifier": .string($0)] }
        )
        let replicated = try await TestServers.waitUntil(timeout: .seconds(20)) {
            try await list(stack, "filter[type]=\(type)").1?.data.count == 2
        }
        #expect(replicated)
        let token = try await AccessTokenFixture.token(stack, scopes: ["read:tasks:\(composed)"])
        let scoped = try await list(stack, "filter[type]=\(type)", token: token)
        #expect(scoped.1?.data.map(\.id) == [ids[0]], "\(scoped.2)")
        let other = decomposed.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        let asked = try await list(stack, "filter[type]=\(type)&filter[taskIdentifier]=\(other)", token: token)
        #expect(asked.1?.data.isEmpty == true, "asking for the other task by name: \(asked.2)")
    }

    @Test func filterValuesWithQuotesAndBackslashesMatch() async throws {
        let stack = try await ServicesFixture.shared.value
        let type = TestServers.uniqueName("o'ne\\il")
        let ids = try await makeSessions(
            stack,
            [["type": .string(type), "tags": ["it's", "back\\slash", "a,b"], "externalId": .string(type + "'\\")]]
        )
        func encoded(_ value: String) -> String {
            value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        }
        func listed(_ name: String, _ value: String) async throws -> [String]? {
            try await list(stack, "\(name)=\(encoded(value))").1?.data.map(\.id)
        }
        let replicated = try await TestServers.waitUntil(timeout: .seconds(20)) {
            try await listed("filter[type]", type) == ids
        }
        #expect(replicated, "listed by a type holding a quote and a backslash")
        #expect(try await listed("filter[tags]", "it's") == ids)
        #expect(try await listed("filter[tags]", "back\\slash") == ids)
        #expect(try await listed("filter[externalId]", type + "'\\") == ids)
        // A comma inside a value is %2C; a bare one separates values.
        #expect(try await listed("filter[tags]", "a,b") == ids)
        #expect(try await list(stack, "filter[type]=\(encoded(type))&filter[tags]=a,b").1?.data.isEmpty == true)
        // As a form or `URLSearchParams` writes a space: `+`. A plus sign itself is `%2B`.
        let spaced = try await makeSessions(stack, [["type": .string(type + " a+b")]])
        let plus = try await TestServers.waitUntil(timeout: .seconds(20)) {
            try await list(stack, "filter[type]=\(encoded(type))+a%2Bb").1?.data.map(\.id) == spaced
        }
        #expect(plus, "listed by a type with a space written as +")
        // A type or tag is stored as given, blanks around it too, and listed by it.
        let blank = try await makeSessions(stack, [["type": .string(" \(type) "), "tags": [" lead"]]])
        let blanks = try await TestServers.waitUntil(timeout: .seconds(20)) {
            try await listed("filter[type]", " \(type) ") == blank
        }
        #expect(blanks, "listed by a type with blanks around it")
        #expect(try await listed("filter[tags]", " lead") == blank)
        #expect(try await listed("filter[type]", type) == ids, "the type without the blanks is another")
    }

    @Test func anItemChangedSinceItsReplicatedCopyIsListedOnlyWhereItStillMatches() async throws {
        let stack = try await ServicesFixture.shared.value
        let type = TestServers.uniqueName("changing")
        let ids = try await makeSessions(stack, [["type": .string(type), "tags": ["old"]]])
        #expect(
            try await TestServers.waitUntil(timeout: .seconds(20)) {
                try await list(stack, "filter[type]=\(type)&filter[tags]=old").1?.data.map(\.id) == ids
            }
        )
        let patched = try await stack.http.execute(
            HTTPRequest(
                method: "PATCH",
                url: stack.controlPlane.baseURL + "/api/v1/sessions/\(ids[0])",
                headers: ["Authorization": "Bearer \(stack.apiKey)", "Content-Type": "application/json"],
                body: Data(#"{"tags":["new"]}"#.utf8)
            )
        )
        #expect(patched.status == 200)
        // Whether or not ClickHouse has the change yet: never listed under a tag it no longer has.
        let (_, stale, text) = try await list(stack, "filter[type]=\(type)&filter[tags]=old")
        #expect(stale?.data.isEmpty == true, "\(text)")
        #expect(
            try await TestServers.waitUntil(timeout: .seconds(20)) {
                try await list(stack, "filter[type]=\(type)&filter[tags]=new").1?.data.map(\.id) == ids
            }
        )
    }

    /// Rows ClickHouse still has but PostgreSQL no longer matches are left out, and the page is
    /// filled from the rows after them instead of coming back short or empty. (Rows made up in
    /// ClickHouse alone stand in for a copy that is behind: replication is too quick to race.)
    @Test func aPageIsFilledPastRowsThatNoLongerMatch() async throws {
        let stack = try await ServicesFixture.shared.value
        let tag = TestServers.uniqueName("fill")
        let ids = try await makeSessions(stack, (0..<3).map { _ in ["type": "t", "tags": .array([.string(tag)])] })
        #expect(
            try await TestServers.waitUntil(timeout: .seconds(20)) {
                try await list(stack, "filter[tags]=\(tag)").1?.data.count == 3
            }
        )
        let clickhouse = ClickHouseClient(configuration: .init(url: try TestServers.clickhouseURL), http: stack.http)
        try await clickhouse.execute(
            """
            INSERT INTO sessions_v1 SELECT * REPLACE (
                concat(session_id, '_gone') AS session_id, created_at + INTERVAL 1 DAY AS created_at
            ) FROM sessions_v1 FINAL WHERE has(tags, {tag:String})
            """,
            parameters: ["tag": .text(tag)]
        )
        let newestFirst = Array(ids.reversed())
        let (status, page, text) = try await list(stack, "filter[tags]=\(tag)&page[size]=3")
        #expect(status == 200 && page?.data.map(\.id) == newestFirst, "\(text)")
        let (_, first, _) = try await list(stack, "filter[tags]=\(tag)&page[size]=2")
        #expect(first?.data.map(\.id) == Array(newestFirst.prefix(2)))
        let next = try #require(first?.pagination.next)
        let (_, second, _) = try await list(stack, "filter[tags]=\(tag)&page[size]=2&page[after]=\(next)")
        #expect(second?.data.map(\.id) == [newestFirst[2]] && second?.pagination.next == nil)
        let back = try #require(second?.pagination.previous)
        let (_, again, againText) = try await list(stack, "filter[tags]=\(tag)&page[size]=2&page[before]=\(back)")
        #expect(again?.data.map(\.id) == Array(newestFirst.prefix(2)), "\(againText)")
    }

    @Test func badListQueriesGetClearErrors() async throws {
        let stack = try await ServicesFixture.shared.value
        for (query, mention) in [
            ("page[size]=0", "page[size]"), ("page[size]=101", "page[size]"), ("filter[status]=DONE", "filter[status]"),
            ("filter[createdAt][period]=soon", "period"), ("page[after]=!!", "page[after]"),
            ("filter[createdAt][period]=20000000000w", "period"),
            ("filter[createdAt][from]=99999999999999999", "filter[createdAt][from]"),
            ("page[after]=MTox&page[before]=MTox", "not both"), ("filter[colour]=red", "filter[colour]"),
            ("filter[createdAt][from]=yesterday", "filter[createdAt][from]"),
            ("page[size]=", "page[size]: it has no value"),
        ] {
            let (status, _, text) = try await list(stack, query)
            #expect(status == 400, "\(query): \(text)")
            #expect(text.contains(mention), "\(query): \(text)")
        }
        #expect(try await list(stack, "&page[size]=1").0 == 200, "an empty parameter names nothing")
    }

    @Test func pagingOver500SessionsOfOneMillisecondReturnsEachOnceBothWays() async throws {
        let stack = try await ServicesFixture.shared.value
        let database = PostgresClient(configuration: .init(url: try TestServers.databaseURL, poolSize: 1))
        let type = TestServers.uniqueName("paging")
        let environment = try await database.query(
            "SELECT organization_id, project_id FROM runtime_environments WHERE id = \(stack.environmentId)"
        ).first!
        let organization = try environment.decode("organization_id", as: String.self)
        let project = try environment.decode("project_id", as: String.self)
        // One statement, one created_at for all 500.
        try await database.query(
            """
            INSERT INTO sessions (id, friendly_id, type, organization_id, project_id, runtime_environment_id,
                environment_type, created_at)
            SELECT \(type) || lpad(n::text, 4, '0'), 'session_' || \(type) || lpad(n::text, 4, '0'), \(type),
                \(organization), \(project), \(stack.environmentId), 'DEVELOPMENT', '2026-01-01 00:00:00.123+00'
            FROM generate_series(1, 500) n
            """
        )
        await database.close()
        #expect(
            try await TestServers.waitUntil(timeout: .seconds(30)) {
                try await list(stack, "filter[type]=\(type)&page[size]=100").1?.pagination.next != nil
            }
        )
        var forward: [[String]] = []
        var previous: [String?] = []
        var cursor: String?
        repeat {
            let page = try #require(
                try await list(
                    stack,
                    "filter[type]=\(type)&page[size]=37" + (cursor.map { "&page[after]=\($0)" } ?? "")
                ).1
            )
            forward.append(page.data.map(\.id))
            previous.append(page.pagination.previous)
            cursor = page.pagination.next
        } while cursor != nil && forward.count < 30
        let all = forward.flatMap { $0 }
        #expect(all.count == 500 && Set(all).count == 500, "each exactly once")
        #expect(all == all.sorted(by: >), "newest first, ties by id")
        #expect(previous.first == .some(nil), "the first page has nothing newer")
        // Back from the last page to the first.
        var backward: [[String]] = [forward.last!]
        var back = previous.last ?? nil
        while let before = back {
            let page = try #require(
                try await list(stack, "filter[type]=\(type)&page[size]=37&page[before]=\(before)").1
            )
            backward.insert(page.data.map(\.id), at: 0)
            back = page.pagination.previous
        }
        #expect(backward.flatMap { $0 } == all, "the same sessions in the same order going back")
    }
}

/// Public access tokens minted for tests with the environment's key.
enum AccessTokenFixture {
    static func token(_ stack: ServicesFixture, scopes: [String]) async throws -> String {
        let database = PostgresClient(configuration: .init(url: try TestServers.databaseURL, poolSize: 1))
        defer { Task { await database.close() } }
        let key = try await database.query("SELECT api_key FROM runtime_environments WHERE id = \(stack.environmentId)")
            .first!.decode("api_key", as: String.self)
        return try await AccessTokens.mint(
            environmentId: stack.environmentId,
            secretKey: key,
            scopes: scopes,
            settings: AccessTokenSettings()
        )
    }
}
