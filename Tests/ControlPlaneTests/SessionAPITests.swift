import Contracts
import Foundation
import HTTPTypes
import JWTKit
import Nats
import Postgres
import ServiceKit
import TestSupport
import Testing

@testable import ControlPlane

@Suite(.timeLimit(.minutes(2))) struct CreateSessionTests {
    @Test func createsThenReturnsTheCachedSessionForTheSameExternalId() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let externalId = TestServers.uniqueName("chat")
            let first = try await api.call(
                .post,
                "/api/v1/sessions",
                token: tenants.a.apiKey,
                json:
                    #"{"type":"chat.agent","externalId":"  \#(externalId)  ","taskIdentifier":"agent","tags":["a","b"],"metadata":{"k":1}}"#
            )
            #expect(first.status == 201)
            let created = try first.json(CreatedSession.self)
            #expect(!created.isCached)
            #expect(created.session.id.hasPrefix("session_"))
            #expect(created.session.externalId == externalId, "externalId is trimmed")
            #expect(created.session.status == .active)
            #expect(created.session.tags == ["a", "b"])
            #expect(created.session.metadata == .object(["k": .number(1)]))
            #expect(first.body.contains(#""closedAt":null"#), "every key is present, nulls included")
            // Numbers a Double would change come back as written, from the create and from storage.
            let numbers = #"{"big":9007199254740993,"long":123456789012345678901234567890123456789,"f":0.1}"#
            let exact = try await api.call(
                .post,
                "/api/v1/sessions",
                token: tenants.a.apiKey,
                json: #"{"type":"t","metadata":\#(numbers)}"#
            )
            let stored = try await api.call(
                .get,
                "/api/v1/sessions/\(try exact.json(CreatedSession.self).session.id)",
                token: tenants.a.apiKey
            )
            for body in [exact.body, stored.body] {
                #expect(body.contains(#""big":9007199254740993"#) && body.contains(#""f":0.1"#), "\(body)")
                #expect(body.contains(#""long":123456789012345678901234567890123456789"#), "\(body)")
            }
            let claims = try await AccessTokens.verify(
                created.publicAccessToken,
                secretKey: tenants.a.apiKey,
                settings: AccessTokenSettings()
            )
            #expect(
                Set(claims.scopes) == ["read:sessions:\(created.session.id)", "write:sessions:\(created.session.id)"]
            )
            #expect(abs(claims.expiresAt.timeIntervalSinceNow - 3600) < 60)
            let exp = claims.expiresAt.timeIntervalSince1970
            #expect(exp == exp.rounded(), "exp is whole seconds")

            let again = try await api.call(
                .post,
                "/api/v1/sessions",
                token: tenants.a.apiKey,
                json: #"{"type":"other","externalId":"\#(externalId)"}"#
            )
            #expect(again.status == 200)
            let cached = try again.json(CreatedSession.self)
            #expect(cached.isCached)
            #expect(cached.session.id == created.session.id)
            #expect(cached.session.type == "chat.agent", "a cached create changes nothing but triggerConfig")
        }
    }

    @Test func fiftyConcurrentCreatesWithOneExternalIdMakeExactlyOneSession() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let externalId = TestServers.uniqueName("race")
            let results = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for _ in 0..<50 {
                    group.addTask {
                        let response = try await api.call(
                            .post,
                            "/api/v1/sessions",
                            token: tenants.a.apiKey,
                            json: #"{"type":"t","externalId":"\#(externalId)"}"#
                        )
                        return (response.status, try response.json(CreatedSession.self).session.id)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.filter { $0.0 == 201 }.count == 1)
            #expect(results.filter { $0.0 == 200 }.count == 49)
            #expect(Set(results.map(\.1)).count == 1)
        }
    }

    /// What the create batcher hands the database: one statement for creates of several kinds.
    @Test func oneStatementCreatesUpdatesAndLeavesAloneAsEachRowAsks() async throws {
        try await withControlPlane { api, tenants, controlPlane, connection in
            let name = TestServers.uniqueName("batch")
            func create(_ suffix: String) async throws -> SessionItem {
                try await api.create(
                    #"{"type":"t","externalId":"\#(name)-\#(suffix)","taskIdentifier":"task-1","triggerConfig":{"v":1}}"#,
                    token: tenants.a.apiKey
                ).session
            }
            let (open, other, closed) = (
                try await create("open"), try await create("other"), try await create("closed")
            )
            _ = try await api.call(.post, "/api/v1/sessions/\(closed.id)/close", token: tenants.a.apiKey, json: "{}")
            func row(
                _ suffix: String?,
                in environment: CreatedEnvironment? = nil,
                onlyTasks: [String]? = nil
            ) -> CreateRow {
                let environment = environment ?? tenants.a
                return CreateRow(
                    id: Identifier.make(),
                    externalId: suffix.map { "\(name)-\($0)" },
                    type: "t",
                    taskIdentifier: "task-1",
                    tags: ["b", "a"],
                    metadata: .object(["n": .number(1)]),
                    triggerConfig: .object(["v": .number(2)]),
                    organizationId: environment.organizationId,
                    projectId: environment.projectId,
                    environmentId: environment.environmentId,
                    environmentType: environment.type,
                    expiresAt: "2030-06-01T12:34:56.123Z",
                    onlyTasks: onlyTasks
                )
            }
            let rows = [
                row("new"), row("open"), row("other", onlyTasks: ["task-2"]), row("closed"), row(nil),
                row("open", in: tenants.b),
            ]
            let written = try await SessionStore.write(rows, database: controlPlane.store.database)
            #expect(written.count == rows.count)

            let new = try #require(written[0])
            #expect(
                new.id == rows[0].id && new.externalId == "\(name)-new" && new.environmentId == tenants.a.environmentId
            )
            #expect(
                new.tags == ["b", "a"] && new.metadata == .object(["n": .number(1)])
                    && new.triggerConfig == .object(["v": .number(2)])
            )
            #expect(new.expiresAt == ISO8601.date(from: "2030-06-01T12:34:56.123Z"))
            let updated = try #require(written[1], "an open session with another trigger configuration is updated")
            #expect(updated.friendlyId == open.id && updated.triggerConfig == .object(["v": .number(2)]))
            #expect(written[2] == nil, "a session of a task the caller may not write is left alone")
            #expect(written[3] == nil, "a closed session is left alone")
            #expect(written[4]?.id == rows[4].id && written[4]?.externalId == nil)
            let elsewhere = try #require(written[5], "the same externalId in another environment is another session")
            #expect(elsewhere.id == rows[5].id && elsewhere.environmentId == tenants.b.environmentId)

            let jetStream = try JetStream(connection: connection)
            var kinds: [String: [SessionEvent.Kind]] = [:]
            _ = try await TestServers.waitUntil {
                try await controlPlane.routes.events.relayBatch()
                for session in [new.friendlyId, open.id, other.id] {
                    kinds[session] = try await sessionEvents(
                        of: session,
                        environment: tenants.a.environmentId,
                        in: jetStream
                    ).map(\.kind)
                }
                return kinds[new.friendlyId] == [.created] && kinds[open.id]?.count == 2
            }
            #expect(kinds[new.friendlyId] == [.created])
            #expect(kinds[open.id] == [.created, .updated])
            #expect(kinds[other.id] == [.created], "a row left alone has no event")
        }
    }

    /// A batch of creates can take a new name and then wait for the row a rename holds, while
    /// the rename waits for that name. PostgreSQL stops the rename (it waited first); the rename
    /// tries again once the batch is done, and finds the name taken: 409, not a 503.
    @Test func aRenameStoppedByADeadlockWithACreateBatchTriesAgain() async throws {
        try await withControlPlane { api, tenants, controlPlane, _ in
            let name = TestServers.uniqueName("deadlock")
            let created = try await api.create(#"{"type":"t","externalId":"\#(name)-old"}"#, token: tenants.a.apiKey)
            let store = controlPlane.store
            let session = try #require(try await store.find(created.session.id, environmentId: tenants.a.environmentId))
            let (holdsName, holding) = AsyncStream<Void>.makeStream()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    // The batch's two steps, apart: a new session named `-new`, then the renamed row.
                    try await store.database.withTransaction { connection in
                        try await connection.query(
                            """
                            INSERT INTO sessions (
                                id, friendly_id, external_id, type, organization_id, project_id,
                                runtime_environment_id, environment_type
                            ) VALUES (
                                \(name), \("session_" + name), \(name + "-new"), 't', \(tenants.a.organizationId),
                                \(tenants.a.projectId), \(tenants.a.environmentId), \(tenants.a.type)
                            )
                            """
                        )
                        holding.yield()
                        let renameWaits = try await TestServers.waitUntil {
                            let rows = try await connection.query(
                                """
                                SELECT count(*)::int AS waiting FROM pg_locks
                                WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))
                                """
                            )
                            return try rows[0].decode("waiting", as: Int.self) > 0
                        }
                        #expect(renameWaits)
                        try await connection.query("UPDATE sessions SET tags = tags WHERE id = \(session.id)")
                    }
                }
                for await _ in holdsName { break }
                let rename = SessionChanges(externalId: .some(name + "-new"))
                await #expect(
                    throws: APIError(.conflict, "A session with this externalId already exists in this environment")
                ) {
                    try await store.update(session, with: rename)
                }
                try await group.waitForAll()
            }
        }
    }

    @Test func concurrentCreatesEachGetTheirOwnSession() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let name = TestServers.uniqueName("many")
            let sessions = try await withThrowingTaskGroup(of: (Int, Int, CreatedSession).self) { group in
                for index in 0..<64 {
                    group.addTask {
                        let externalId = index.isMultiple(of: 2) ? #","externalId":"\#(name)-\#(index)""# : ""
                        let response = try await api.post(
                            #"{"type":"t","metadata":{"i":\#(index)}\#(externalId)}"#,
                            token: tenants.a.apiKey
                        )
                        return (index, response.status, try response.json(CreatedSession.self))
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(sessions.count == 64)
            for (index, status, created) in sessions {
                #expect(status == 201)
                #expect(created.session.metadata == .object(["i": .number(Double(index))]))
                #expect(created.session.externalId == (index.isMultiple(of: 2) ? "\(name)-\(index)" : nil))
            }
            #expect(Set(sessions.map(\.2.session.id)).count == 64)
        }
    }

    @Test func closedOrExpiredExistingSessionsConflict() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let closedId = TestServers.uniqueName("closed")
            let created = try await api.create(#"{"type":"t","externalId":"\#(closedId)"}"#, token: tenants.a.apiKey)
            _ = try await api.call(
                .post,
                "/api/v1/sessions/\(created.session.id)/close",
                token: tenants.a.apiKey,
                json: "{}"
            )
            let reuse = try await api.call(
                .post,
                "/api/v1/sessions",
                token: tenants.a.apiKey,
                json: #"{"type":"t","externalId":"\#(closedId)"}"#
            )
            #expect(reuse.status == 409)
            #expect(reuse.error?.contains("closed") == true)

            let expiredId = TestServers.uniqueName("expired")
            let past = ISO8601.string(from: Date().addingTimeInterval(-60))
            let expired = try await api.call(
                .post,
                "/api/v1/sessions",
                token: tenants.a.apiKey,
                json: #"{"type":"t","externalId":"\#(expiredId)","expiresAt":"\#(past)"}"#
            )
            #expect(expired.status == 201, "a past expiresAt is accepted on create")
            #expect(try expired.json(CreatedSession.self).session.status == .expired)
            let again = try await api.call(
                .post,
                "/api/v1/sessions",
                token: tenants.a.apiKey,
                json: #"{"type":"t","externalId":"\#(expiredId)"}"#
            )
            #expect(again.status == 409)
            #expect(again.error?.contains("expired") == true)
        }
    }

    @Test func expiresAtAcceptsEpochMilliseconds() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let created = try await api.create(#"{"type":"t","expiresAt":4102444800000}"#, token: tenants.a.apiKey)
            #expect(created.session.expiresAt == Date(timeIntervalSince1970: 4_102_444_800))
            #expect(created.session.status == .active)
            // Any millisecond, not only round ones (1 in 20 was refused as "not a whole number").
            for milliseconds in [1_796_024_125_239, 1_800_000_000_001, 2_000_000_000_123] {
                let session = try await api.create(
                    #"{"type":"t","expiresAt":\#(milliseconds)}"#,
                    token: tenants.a.apiKey
                )
                .session
                let stored = session.expiresAt.map { Int(($0.timeIntervalSince1970 * 1000).rounded()) }
                #expect(stored == milliseconds)
            }
        }
    }

    @Test(arguments: ["2030-06-01T12:34:56.123Z", "2030-06-01T12:34:56.001Z", "2299-12-31T23:59:59.999Z"])
    func expiresAtKeepsItsMilliseconds(text: String) async throws {
        try await withControlPlane { api, tenants, _, _ in
            let response = try await api.call(
                .post,
                "/api/v1/sessions",
                token: tenants.a.apiKey,
                json: #"{"type":"t","expiresAt":"\#(text)"}"#
            )
            #expect(response.body.contains(#""expiresAt":"\#(text)""#), "\(response.body)")
        }
    }

    @Test func urlsWithNULAreRejected() async throws {
        try await withControlPlane { api, tenants, _, _ in
            for path in ["/api/v1/sessions/abc%00def", "/api/v1/sessions?filter[externalId]=a%00"] {
                let response = try await api.call(.get, path, token: tenants.a.apiKey)
                #expect(response.status == 400, "\(path)")
                #expect(response.error?.contains("NUL") == true)
            }
        }
    }

    static let invalidBodies: [(String, String)] = [
        (#"{}"#, "type is required"),
        (#"{"type":""}"#, "type must be 1-64"),
        (#"{"type":"\#(String(repeating: "x", count: 65))"}"#, "type must be 1-64"),
        (#"{"type":3}"#, "type must be a string"),
        // JSON has no trailing commas, though Foundation's decoder takes them.
        (#"{"type":"t",}"#, "Invalid JSON"),
        (#"{"type":"t","tags":["a",]}"#, "Invalid JSON"),
        (#"{"type":"t","externalId":"   "}"#, "externalId must be 1-256"),
        (#"{"type":"t","externalId":"\#(String(repeating: "x", count: 257))"}"#, "externalId must be 1-256"),
        // One character as a reader sees it, 1,201 bytes: over the 4 bytes per character an
        // index entry has room for.
        (
            #"{"type":"t","externalId":"k\#(String(repeating: "\u{301}", count: 600))"}"#,
            "externalId must be at most 1024 bytes long in UTF-8"
        ),
        (
            #"{"type":"t","tags":["k\#(String(repeating: "\u{301}", count: 300))"]}"#,
            "tags[0] must be at most 512 bytes"
        ),
        (#"{"type":"t","externalId":"session_abc"}"#, "externalId must not start with session_"),
        (#"{"type":"t","taskIdentifier":"\#(String(repeating: "x", count: 129))"}"#, "taskIdentifier must be 1-128"),
        (#"{"type":"t","tags":["1","2","3","4","5","6","7","8","9","10","11"]}"#, "tags must have at most 10"),
        (#"{"type":"t","tags":["\#(String(repeating: "x", count: 129))"]}"#, "tags[0] must be 1-128"),
        (#"{"type":"t","tags":[""]}"#, "tags[0] must be 1-128"),
        (#"{"type":"t","tags":[1]}"#, "tags[0] must be a string"),
        (#"{"type":"t","tags":"a"}"#, "tags must be an array"),
        (#"{"type":"t","metadata":[1,2]}"#, "metadata must be a JSON object"),
        (#"{"type":"t","metadata":"x"}"#, "metadata must be a JSON object"),
        (#"{"type":"t","triggerConfig":5}"#, "triggerConfig must be a JSON object"),
        (#"{"type":"t","expiresAt":"tomorrow"}"#, "expiresAt must be an ISO-8601 date"),
        (#"{"type":"t","expiresAt":1.5}"#, "expiresAt must be an ISO-8601 date or epoch milliseconds"),
        (#"{"type":"t","expiresAt":912000000000000}"#, "expiresAt must be a date from 1970 to 2299"),
        (#"{"type":"t","expiresAt":1e300}"#, "expiresAt must be a date from 1970 to 2299"),
        (#"{"type":"t","expiresAt":"2300-01-01T00:00:00Z"}"#, "expiresAt must be a date from 1970 to 2299"),
        (#"{"type":"t","externalId":"a\u0000b"}"#, "must not contain NUL"),
        (#"{"type":"t","tags":["a\u0000"]}"#, "must not contain NUL"),
        (#"{"type":"t","metadata":{"k":"\u0000"}}"#, "metadata.k must not contain NUL"),
        (#"{"type":"t","metadata":{"a":[1,{"\u0000":2}]}}"#, #"metadata.a[1].\u0000 must not contain NUL"#),
        (#"{"type":"t","metadata":\#(nested(32))}"#, "JSON may nest at most 32 levels deep"),
        (#"{"type":"t","triggerConfig":{"a":[\#(nested(31))]}}"#, "JSON may nest at most 32 levels deep"),
        (#"{"type":"#, "Invalid JSON"),
        (#"[1]"#, "must be a JSON object"),
        (#"null"#, "must be a JSON object"),
        ("", "Request body is empty"),
    ]

    /// A JSON object nested `levels` deep: `{"a":{"a":…1…}}`.
    static func nested(_ levels: Int) -> String {
        String(repeating: #"{"a":"#, count: levels) + "1" + String(repeating: "}", count: levels)
    }

    @Test func theDeepestMetadataAllowedIsStoredAndReadBack() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let created = try await api.create(#"{"type":"t","metadata":\#(Self.nested(31))}"#, token: tenants.a.apiKey)
            #expect(created.session.metadata?.depth == 31)
            let read = try await api.call(.get, "/api/v1/sessions/\(created.session.id)", token: tenants.a.apiKey)
            #expect(try read.json(SessionItem.self).metadata == created.session.metadata)
        }
    }

    @Test func createsThatChangeTheTriggerConfigAreUpdatesAndOthersWriteNothing() async throws {
        try await withControlPlane { api, tenants, controlPlane, connection in
            let name = TestServers.uniqueName("config")
            func create(_ extra: String, externalId: String? = nil) async throws -> APIResponse {
                try await api.post(
                    #"{"type":"t","externalId":"\#(externalId ?? name)"\#(extra)}"#,
                    token: tenants.a.apiKey
                )
            }
            let first = try await create(#","triggerConfig":{"v":1}"#).json(CreatedSession.self).session
            for same in [#","triggerConfig":{"v":1}"#, ""] {
                let again = try await create(same)
                #expect(again.status == 200)
                #expect(try again.json(CreatedSession.self).session == first, "nothing changes, updatedAt included")
            }
            let changed = try await create(#","triggerConfig":{"v":2}"#)
            #expect(changed.status == 200)
            #expect(try changed.json(CreatedSession.self).session.id == first.id)
            let path = "/api/v1/sessions/\(first.id)"
            let renamed = name + "-renamed"
            _ = try await api.call(.patch, path, token: tenants.a.apiKey, json: #"{"externalId":"\#(renamed)"}"#)
            _ = try await api.call(.post, path + "/close", token: tenants.a.apiKey, json: "{}")
            let closed = try await create(#","triggerConfig":{"v":3}"#, externalId: renamed)
            #expect(closed.status == 409)
            let stored = try await api.call(.get, path, token: tenants.a.apiKey).json(SessionItem.self)
            #expect(stored.status == .closed)

            let jetStream = try JetStream(connection: connection)
            var events: [SessionEvent] = []
            _ = try await TestServers.waitUntil {
                try await controlPlane.routes.events.relayBatch()
                events = try await sessionEvents(of: first.id, environment: tenants.a.environmentId, in: jetStream)
                return events.count >= 4
            }
            #expect(events.map(\.kind) == [.created, .updated, .updated, .closed])
            let configs: [JSONValue?] = [1, 2, 2, 2].map { .object(["v": .number($0)]) }
            #expect(events.map(\.session.triggerConfig) == configs)
            #expect(events.map(\.previousExternalId) == [nil, nil, name, nil], "a rename names the old externalId")
        }
    }

    @Test func anExpiredSessionKeepsItsTriggerConfig() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let name = TestServers.uniqueName("expired-config")
            let past = ISO8601.string(from: Date().addingTimeInterval(-60))
            let body = #"{"type":"t","externalId":"\#(name)","expiresAt":"\#(past)","triggerConfig":{"v":1}}"#
            let created = try await api.create(body, token: tenants.a.apiKey).session
            let again = try await api.post(
                #"{"type":"t","externalId":"\#(name)","triggerConfig":{"v":2}}"#,
                token: tenants.a.apiKey
            )
            #expect(again.status == 409)
            let stored = try await api.call(.get, "/api/v1/sessions/\(name)", token: tenants.a.apiKey)
            #expect(try stored.json(SessionItem.self) == created, "the refused create wrote nothing")
        }
    }

    @Test func everyValidationRuleIsA400NamingTheField() async throws {
        try await withControlPlane { api, tenants, _, _ in
            for (body, message) in Self.invalidBodies {
                let response = try await api.call(.post, "/api/v1/sessions", token: tenants.a.apiKey, json: body)
                #expect(response.status == 400, "\(body) → \(response.status)")
                #expect(response.error?.contains(message) == true, "\(body) → \(response.body), expected \(message)")
            }
        }
    }

    @Test func commasBeforeBracketsInsideStringsAreNotTrailingCommas() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let body = #"{"type":"t","metadata":{"a":"x,]","b":"\",}","c":[1, 2 ]}}"#
            let created = try await api.call(.post, "/api/v1/sessions", token: tenants.a.apiKey, json: body)
            #expect(created.status == 201, "\(created.body)")
        }
    }

    @Test func bodiesOverTheLimitAre413() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let large = #"{"type":"t","metadata":{"x":"\#(String(repeating: "a", count: 33 * 1024))"}}"#
            let tooLarge = try await api.call(.post, "/api/v1/sessions", token: tenants.a.apiKey, json: large)
            #expect(tooLarge.status == 413)
            #expect(tooLarge.error == "Request body too large")
            #expect(tooLarge.headers[.accessControlAllowOrigin] == "*")
            // A body without Content-Length is covered end to end (the in-process client always sets one).
        }
    }
}

@Suite(.timeLimit(.minutes(2))) struct RetrieveUpdateCloseTests {
    @Test func retrievesByEitherId() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let externalId = TestServers.uniqueName("ext")
            let created = try await api.create(#"{"type":"t","externalId":"\#(externalId)"}"#, token: tenants.a.apiKey)
            // The name as created finds it too: an externalId is trimmed when stored and when named.
            for key in [created.session.id, externalId, "%20\(externalId)%20"] {
                let response = try await api.call(.get, "/api/v1/sessions/\(key)", token: tenants.a.apiKey)
                #expect(response.status == 200, "\(key)")
                #expect(try response.json(SessionItem.self) == created.session)
            }
            let missing = try await api.call(.get, "/api/v1/sessions/session_nope", token: tenants.a.apiKey)
            #expect(missing.status == 404)
            #expect(missing.error == "Session not found")
        }
    }

    @Test func externalIdsAreNamedPercentEncodedInPaths() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let prefix = TestServers.uniqueName("enc")
            // A name that needs encoding, and one that looks like the encoded form of another.
            let names = [
                prefix + " a/b?c#d é日本", prefix + "-a%2Fb", prefix + String(repeating: "é", count: 256 - prefix.count),
            ]
            var sessions: [String: SessionItem] = [:]
            for name in names {
                let body = try JSONEncoder().encode(["type": "t", "externalId": name])
                sessions[name] = try await api.create(String(decoding: body, as: UTF8.self), token: tenants.a.apiKey)
                    .session
            }
            for name in names {
                let path = name.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
                let found = try await api.call(.get, "/api/v1/sessions/\(path)", token: tenants.a.apiKey)
                #expect(found.status == 200, "\(name) → \(found.status) \(found.body)")
                #expect(try found.json(SessionItem.self).id == sessions[name]?.id)
                let closed = try await api.call(
                    .post,
                    "/api/v1/sessions/\(path)/close",
                    token: tenants.a.apiKey,
                    json: "{}"
                )
                #expect(try closed.json(SessionItem.self).id == sessions[name]?.id, "close reaches the named session")
            }
            for bad in ["%zz", "%C3", String(repeating: "%C3%A9", count: 257)] {
                let response = try await api.call(.get, "/api/v1/sessions/\(bad)", token: tenants.a.apiKey)
                #expect(response.status == 400, "\(bad)")
                #expect(response.error == "Invalid session id")
            }
        }
    }

    @Test func patchReplacesTagsClearsMetadataAndMovesExternalId() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let created = try await api.create(
                #"{"type":"t","tags":["a"],"metadata":{"m":true}}"#,
                token: tenants.a.apiKey
            )
            let path = "/api/v1/sessions/\(created.session.id)"
            let newId = TestServers.uniqueName("moved")
            let patched = try await api.call(
                .patch,
                path,
                token: tenants.a.apiKey,
                json: #"{"tags":["x","y"],"metadata":null,"externalId":"\#(newId)"}"#
            )
            #expect(patched.status == 200)
            let session = try patched.json(SessionItem.self)
            #expect(session.tags == ["x", "y"])
            #expect(session.metadata == nil)
            #expect(session.externalId == newId)
            #expect(session.updatedAt >= created.session.updatedAt)
            #expect(session.type == "t")

            let untouched = try await api.call(.patch, path, token: tenants.a.apiKey, json: #"{"metadata":{"n":1}}"#)
            #expect(try untouched.json(SessionItem.self).tags == ["x", "y"], "absent fields stay as they are")

            let other = try await api.create(
                #"{"type":"t","externalId":"\#(TestServers.uniqueName("other"))"}"#,
                token: tenants.a.apiKey
            )
            let duplicate = try await api.call(
                .patch,
                "/api/v1/sessions/\(other.session.id)",
                token: tenants.a.apiKey,
                json: #"{"externalId":"\#(newId)"}"#
            )
            #expect(duplicate.status == 409)
            #expect(duplicate.error == "A session with this externalId already exists in this environment")

            let cleared = try await api.call(.patch, path, token: tenants.a.apiKey, json: #"{"externalId":null}"#)
            #expect(try cleared.json(SessionItem.self).externalId == nil)

            // A PATCH that changes nothing writes nothing.
            let before = try await api.call(.get, path, token: tenants.a.apiKey).json(SessionItem.self)
            let empty = try await api.call(.patch, path, token: tenants.a.apiKey, json: "{}")
            #expect(empty.status == 200)
            #expect(try empty.json(SessionItem.self) == before)

            for (body, message) in [
                (#"{"type":"u"}"#, "type cannot be changed"),
                (#"{"tags":["z"],"expiresAt":"2030-01-01T00:00:00Z"}"#, "expiresAt cannot be changed"),
                (#"{"tags":null}"#, "tags must be an array"),
                (#"{"externalId":"session_x"}"#, "must not start with session_"),
                (#"{"metadata":7}"#, "metadata must be a JSON object"),
            ] {
                let invalid = try await api.call(.patch, path, token: tenants.a.apiKey, json: body)
                #expect(invalid.status == 400)
                #expect(invalid.error?.contains(message) == true, "\(invalid.body)")
            }
        }
    }

    @Test func closeIsWriteOnceAndIdempotent() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let created = try await api.create(#"{"type":"t"}"#, token: tenants.a.apiKey)
            let path = "/api/v1/sessions/\(created.session.id)/close"
            let first = try await api.call(.post, path, token: tenants.a.apiKey, json: #"{"reason":"done"}"#)
            #expect(first.status == 200)
            let closed = try first.json(SessionItem.self)
            #expect(closed.status == .closed)
            #expect(closed.closedReason == "done")
            let closedAt = try #require(closed.closedAt)

            let second = try await api.call(.post, path, token: tenants.a.apiKey, json: #"{"reason":"again"}"#)
            #expect(second.status == 200)
            #expect(try second.json(SessionItem.self).closedAt == closedAt)
            #expect(try second.json(SessionItem.self).closedReason == "done")

            let emptyBody = try await api.call(.post, path, token: tenants.a.apiKey, json: "")
            #expect(emptyBody.status == 200, "no body is the same as {}")
            let longReason = try await api.call(
                .post,
                path,
                token: tenants.a.apiKey,
                json: #"{"reason":"\#(String(repeating: "r", count: 257))"}"#
            )
            #expect(longReason.status == 400)
            #expect(longReason.error?.contains("reason") == true)
            let tooLarge = try await api.call(
                .post,
                path,
                token: tenants.a.apiKey,
                json: #"{"reason":"\#(String(repeating: "r", count: 1100))"}"#
            )
            #expect(tooLarge.status == 413)

            let retrieved = try await api.call(.get, "/api/v1/sessions/\(created.session.id)", token: tenants.a.apiKey)
            #expect(try retrieved.json(SessionItem.self).status == .closed, "reads keep working after close")
        }
    }

    /// A write that waited for the row behind another must not carry an earlier time than the
    /// one it follows (PostgreSQL's `now()` is when the transaction began): times never go back.
    /// The stored `updated_at` is moved ahead here to stand for the write that went first.
    @Test func writesNeverMoveUpdatedAtBack() async throws {
        try await withControlPlane { api, tenants, controlPlane, _ in
            let created = try await api.create(
                #"{"type":"t","externalId":"\#(UUID().uuidString)"}"#,
                token: tenants.a.apiKey
            )
            let path = "/api/v1/sessions/\(created.session.id)"
            func moveAhead() async throws -> Date {
                let row = try await controlPlane.store.database.query(
                    """
                    UPDATE sessions SET updated_at = now() + interval '1 hour' WHERE friendly_id = \(created.session.id)
                    RETURNING to_jsonb(sessions)::text AS session_row
                    """
                )
                return try #require(try row.first.map(SessionRow.decode)).updatedAt
            }
            var ahead = try await moveAhead()
            let patched = try await api.call(.patch, path, token: tenants.a.apiKey, json: #"{"tags":["x"]}"#)
            #expect(try patched.json(SessionItem.self).updatedAt >= ahead)
            ahead = try await moveAhead()
            let reconfigured = try await api.call(
                .post,
                "/api/v1/sessions",
                token: tenants.a.apiKey,
                json: #"{"type":"t","externalId":"\#(created.session.externalId ?? "")","triggerConfig":{"k":1}}"#
            )
            #expect(try reconfigured.json(CreatedSession.self).session.updatedAt >= ahead)
            ahead = try await moveAhead()
            let closed = try await api.call(.post, path + "/close", token: tenants.a.apiKey, json: "{}")
                .json(SessionItem.self)
            #expect(closed.updatedAt >= ahead)
            #expect(closed.closedAt == closed.updatedAt)
        }
    }

    @Test func fiftyConcurrentClosesAgreeOnOneClosedAt() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let created = try await api.create(#"{"type":"t"}"#, token: tenants.a.apiKey)
            let results = try await withThrowingTaskGroup(of: SessionItem.self) { group in
                for index in 0..<50 {
                    group.addTask {
                        try await api.call(
                            .post,
                            "/api/v1/sessions/\(created.session.id)/close",
                            token: tenants.a.apiKey,
                            json: #"{"reason":"r\#(index)"}"#
                        ).json(SessionItem.self)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(results.compactMap(\.closedAt)).count == 1)
            #expect(Set(results.compactMap(\.closedReason)).count == 1)
            #expect(results.count == 50)
        }
    }
}
