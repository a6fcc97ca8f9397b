import Contracts
import Foundation
import HTTPClient
import Nats
import Postgres
import Redis
import TestSupport
import Testing

extension ServicesFixture {
    /// `POST /api/v1/runs/{run}/session-streams/wait` on `base` (the fixture's waitpoints by default);
    /// `run` as it goes in the path.
    func wait(
        _ body: [String: JSONValue],
        base: String? = nil,
        key: String? = nil,
        run: String = "run_test"
    ) async throws -> HTTPResponse {
        try await http.execute(
            HTTPRequest(
                method: "POST",
                url: (base ?? waitpoints.baseURL) + "/api/v1/runs/\(run)/session-streams/wait",
                headers: ["Authorization": "Bearer \(key ?? apiKey)", "Content-Type": "application/json"],
                body: try JSONEncoder().encode(body)
            )
        )
    }

    /// Waits and returns the waitpoint id, failing on anything but 200.
    func waitpointId(_ body: [String: JSONValue], base: String? = nil) async throws -> String {
        let response = try await wait(body, base: base)
        guard response.status == 200 else {
            throw FixtureError("wait answered \(response.status): \(String(decoding: response.body, as: UTF8.self))")
        }
        return try JSONDecoder().decode(WaitBody.self, from: response.body).waitpointId
    }

    /// The environment's completion events up to the first moment all of `ids` have appeared (and
    /// nothing more is stored), each reduced to the sorted ids of `ids` it carries; messages with
    /// none are left out, and every message is checked for its shape. Gives up after `timeout`.
    func completionEvents(of ids: Set<String>, timeout: Duration = .seconds(15)) async throws -> [[String]] {
        let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "events"))
        let jetStream = try JetStream(connection: connection)
        let events = try jetStream.orderedConsumer(
            stream: Subjects.waitpointEventsStream,
            subject: Subjects.waitpointEvent(environmentId: environmentId, kind: .completed)
        )
        let timer = Task {
            try await Task.sleep(for: timeout)
            events.unsubscribe()
        }
        var messages: [[String]] = []
        var seen: Set<String> = []
        for await message in events {
            let event = try JSONDecoder.sessions.decode(WaitpointEvent.self, from: message.payload)
            #expect(event.kind == .completed && (1...100).contains(event.waitpoints.count))
            let wanted = event.waitpoints.map(\.id).filter(ids.contains).sorted()
            if !wanted.isEmpty { messages.append(wanted) }
            seen.formUnion(wanted)
            if seen == ids, message.metadata?.pending == 0 { break }
        }
        timer.cancel()
        events.unsubscribe()
        await connection.close()
        return messages
    }

    func waitpoint(_ id: String, base: String? = nil, poll seconds: Int? = nil) async throws -> WaitpointItem {
        let path = seconds.map { "/wait?timeout=\($0)" } ?? ""
        let response = try await http.execute(
            HTTPRequest(
                url: (base ?? waitpoints.baseURL) + "/api/v1/waitpoints/\(id)" + path,
                headers: auth,
                timeout: .seconds((seconds ?? 0) + 15)
            )
        )
        guard response.status == 200 else {
            throw FixtureError(
                "waitpoint answered \(response.status): \(String(decoding: response.body, as: UTF8.self))"
            )
        }
        return try JSONDecoder.sessions.decode(WaitpointItem.self, from: response.body)
    }

    struct WaitBody: Decodable {
        var waitpointId: String
        var isCached: Bool
    }
}

@Suite(.timeLimit(.minutes(2))) struct WaitpointTests {
    @Test func everyWaiterOfAChannelCompletesWithTheAppendedBody() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let first = try await stack.waitpointId(["session": .string(session.id), "io": "in", "timeout": "1h"])
        let second = try await stack.waitpointId(["session": .string(session.id), "io": "in"])
        let other = try await stack.waitpointId(["session": .string(session.id), "io": "out"])
        _ = try await stack.appended(session.id, #"{"approved":true}"#, io: "in")
        for id in [first, second] {
            let done = try await stack.waitpoint(id, poll: 60)
            #expect(done.status == .completed)
            #expect(done.output == WaitpointOutput(value: #"{"approved":true}"#, seqNum: 0))
        }
        #expect(try await stack.waitpoint(other).status == .pending, "an .in append leaves .out waiters")
        // Completed by one record, the two share one durable event.
        #expect(try await stack.completionEvents(of: [first, second]) == [[first, second].sorted()])
    }

    @Test func aShortWaiterNeverShortensALongOnesRegistration() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let redis = try RedisClient(configuration: .init(url: try TestServers.redisURL))
        let key = "ssw2:\(stack.environmentId):\(session.id):in"
        _ = try await stack.waitpointId(["session": .string(session.id), "io": "in", "timeout": "2h"])
        let long = try #require(try await redis.command("PTTL", key).integer)
        #expect(long > 7_000_000)
        _ = try await stack.waitpointId(["session": .string(session.id), "io": "in", "timeout": "5s"])
        #expect(try await redis.command("PTTL", key).integer ?? 0 > 7_000_000, "still the long one's")
        _ = try await stack.waitpointId(["session": .string(session.id), "io": "in"])
        #expect(try await redis.command("PTTL", key).integer == -1, "no timeout: no expiry")
        #expect(try await redis.command("ZCARD", key).integer == 3)
        await redis.close()
    }

    @Test func aRecordAfterLastSeqNumCompletesAtOnceAndAnOlderOneNever() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        for index in 0..<3 { _ = try await stack.appended(session.id, "old \(index)", io: "in") }
        let caughtUp = try await stack.waitpointId(["session": .string(session.id), "io": "in", "lastSeqNum": 0])
        let item = try await stack.waitpoint(caughtUp)
        #expect(item.status == .completed && item.output?.value == "old 1", "the first record after lastSeqNum")
        #expect(item.output?.seqNum == 1, "the record's sequence number: the next wait's lastSeqNum")
        let fromStart = try await stack.waitpointId(["session": .string(session.id), "io": "in", "lastSeqNum": -1])
        #expect(try await stack.waitpoint(fromStart).output?.value == "old 0")
        let fresh = try await stack.waitpointId(["session": .string(session.id), "io": "in"])
        #expect(
            try await stack.waitpoint(fresh, poll: 1).status == .pending,
            "old records do not count without lastSeqNum"
        )
        _ = try await stack.appended(session.id, "new", io: "in")
        #expect(try await stack.waitpoint(fresh, poll: 60).output?.value == "new")
        // Any number in the range is taken, not only round ones.
        let far = try await stack.waitpointId(["session": .string(session.id), "io": "in", "lastSeqNum": 1_234_567_891])
        #expect(try await stack.waitpoint(far).status == .pending)
    }

    /// A lastSeqNum at or past the channel's last record (the tail S2 reports is the next
    /// sequence number; a stale one after a rename) waits for the next record, as a clamped read
    /// starts at the tail — not for a record that may never come.
    @Test func aLastSeqNumAtOrPastTheEndWaitsForTheNextRecord() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        for index in 0..<3 { _ = try await stack.appended(session.id, "old \(index)", io: "in") }
        var ids: [String] = []
        for last in [2, 3, 100] {
            ids.append(
                try await stack.waitpointId([
                    "session": .string(session.id), "io": "in", "lastSeqNum": .number(Double(last)),
                ])
            )
        }
        for id in ids { #expect(try await stack.waitpoint(id).status == .pending) }
        _ = try await stack.appended(session.id, "next", io: "in")
        for id in ids {
            let done = try await stack.waitpoint(id, poll: 60)
            #expect(done.output == WaitpointOutput(value: "next", seqNum: 3), "\(id)")
        }
    }

    /// A record that is there already completes the waitpoint as it is created: a timeout that
    /// is already past cannot beat it, and its completion event is published all the same.
    @Test func aRecordAlreadyThereBeatsAPastTimeout() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        _ = try await stack.appended(session.id, "there", io: "in")
        var ids: [String] = []
        for _ in 0..<20 {
            let id = try await stack.waitpointId(
                ["session": .string(session.id), "io": "in", "lastSeqNum": -1, "timeout": "2020-01-01T00:00:00Z"]
            )
            let item = try await stack.waitpoint(id)
            #expect(item.status == .completed && item.output == WaitpointOutput(value: "there", seqNum: 0), "\(id)")
            ids.append(id)
        }
        let published = try await stack.completionEvents(of: Set(ids)).flatMap { $0 }
        #expect(published.sorted() == ids.sorted(), "one completion event each")
    }

    /// S2 command records (`trim`, `fence`) wake no one: readers skip them, and so do waiters,
    /// whichever way they meet one. Bytes that are not text come as their base64.
    @Test func commandRecordsWakeNoOneAndBytesComeAsBase64() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let s2 = S2SubsetTests()
        let channel = try await s2.initialize(stack, session.id, io: "in")
        let headers: HTTPHeaders = [
            "Authorization": "Bearer \(channel.token)", "Content-Type": "application/json", "S2-Format": "base64",
        ]
        @Sendable func directAppend(_ records: String) async throws {
            let response = try await stack.http.execute(
                HTTPRequest(
                    method: "POST",
                    url: s2.recordsURL(stack, channel.streamName),
                    headers: headers,
                    body: Data(#"{"records":[\#(records)]}"#.utf8)
                )
            )
            #expect(response.status == 200, "\(String(decoding: response.body, as: UTF8.self))")
        }
        let trim = #"{"body":"\#(Data(repeating: 0, count: 8).base64EncodedString())","headers":[["","dHJpbQ=="]]}"#
        let bytes = Data([0xFF, 0xFE, 0x00]).base64EncodedString()
        let waiting = try await stack.waitpointId(["session": .string(session.id), "io": "in"])
        try await directAppend(trim)  // 0
        try await directAppend(#"{"body":"\#(bytes)"}"#)  // 1
        let binary = WaitpointOutput(value: bytes, type: "application/octet-stream", seqNum: 1)
        #expect(try await stack.waitpoint(waiting, poll: 60).output == binary, "woken by record 1, not the command")
        let fromStart = try await stack.waitpointId(["session": .string(session.id), "io": "in", "lastSeqNum": -1])
        #expect(try await stack.waitpoint(fromStart).output == binary, "the command skipped when it is there already")
        let afterIt = try await stack.waitpointId(["session": .string(session.id), "io": "in", "lastSeqNum": 1])
        try await directAppend(trim)  // 2
        _ = try await stack.appended(session.id, "text", io: "in")  // 3
        #expect(
            try await stack.waitpoint(afterIt, poll: 60).output == WaitpointOutput(value: "text", seqNum: 3),
            "a waiter for a command gets the record after it"
        )
    }

    @Test func waitersRacingAppendsCompleteExactlyOnce() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        // Waiters register while records are appended: each must complete once.
        let ids = try await withThrowingTaskGroup(of: [String].self) { group in
            group.addTask {
                for index in 0..<20 { _ = try await stack.appended(session.id, "r\(index)", io: "in") }
                return []
            }
            for _ in 0..<4 {
                group.addTask {
                    var ids: [String] = []
                    for _ in 0..<10 {
                        ids.append(try await stack.waitpointId(["session": .string(session.id), "io": "in"]))
                    }
                    return ids
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        _ = try await stack.appended(session.id, "last", io: "in")  // completes any still waiting
        for id in ids { #expect(try await stack.waitpoint(id, poll: 60).status == .completed, "\(id)") }
        // The durable events a run engine reads: one completion per waitpoint.
        let messages = try await stack.completionEvents(of: Set(ids))
        var completions: [String: Int] = [:]
        for id in messages.flatMap({ $0 }) { completions[id, default: 0] += 1 }
        #expect(Set(completions.keys) == Set(ids))
        #expect(completions.values.allSatisfy { $0 == 1 }, "\(completions.filter { $0.value != 1 })")
    }

    @Test func aRecordHoldingNULCompletesItsWaiter() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let id = try await stack.waitpointId(["session": .string(session.id), "io": "in"])
        // PostgreSQL's jsonb refuses \u0000; the output must still be stored, and the record acknowledged.
        _ = try await stack.appended(session.id, "a\u{0}b", io: "in")
        let done = try await stack.waitpoint(id, poll: 60)
        #expect(done.status == .completed && done.output?.value == "a\u{0}b", "\(done)")
        let next = try await stack.waitpointId(["session": .string(session.id), "io": "in"])
        _ = try await stack.appended(session.id, "after it", io: "in")
        #expect(try await stack.waitpoint(next, poll: 60).output?.value == "after it", "the channel goes on")
    }

    @Test func manyWaitersOfALargeRecordAllGetTheirEvents() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        var ids: [String] = []
        for _ in 0..<20 { ids.append(try await stack.waitpointId(["session": .string(session.id), "io": "in"])) }
        // 20 completions of a 500 KB record: 10 MB, over NATS's 8 MB max_payload as one message.
        let record = String(repeating: "x", count: 500_000)
        _ = try await stack.appended(session.id, record, io: "in")
        for id in ids { #expect(try await stack.waitpoint(id, poll: 60).output?.value.count == record.count) }
        let messages = try await stack.completionEvents(of: Set(ids), timeout: .seconds(30))
        #expect(Set(messages.flatMap { $0 }) == Set(ids))
        #expect(messages.allSatisfy { $0.count <= 2 }, "about 1 MiB of outputs per message: \(messages.map(\.count))")
    }

    /// A channel whose waitpoints PostgreSQL cannot update yet (a transaction holds the row)
    /// holds up that channel only: another channel's record, appended meanwhile, wakes its waiter.
    @Test func aSlowChannelDoesNotHoldUpTheOthers() async throws {
        let stack = try await ServicesFixture.shared.value
        let slow = try await stack.createSession()
        let quick = try await stack.createSession()
        let held = try await stack.waitpointId(["session": .string(slow.id), "io": "in"])
        let other = try await stack.waitpointId(["session": .string(quick.id), "io": "in"])
        let database = PostgresClient(configuration: .init(url: try TestServers.databaseURL, poolSize: 2))
        try await database.withTransaction { connection in
            try await connection.query("SELECT 1 FROM waitpoints WHERE friendly_id = \(held) FOR UPDATE")
            _ = try await stack.appended(slow.id, "slow", io: "in")
            let blocked = try await TestServers.waitUntil(timeout: .seconds(15)) {
                try await !database.query(
                    """
                    SELECT 1 FROM pg_stat_activity
                    WHERE wait_event_type = 'Lock' AND query LIKE '%UPDATE waitpoints SET status%'
                    """
                ).isEmpty
            }
            #expect(blocked, "the slow channel's update waits for the row")
            _ = try await stack.appended(quick.id, "quick", io: "in")
            #expect(try await stack.waitpoint(other, poll: 10).status == .completed)
            #expect(try await stack.waitpoint(held).status == .pending)
        }
        #expect(try await stack.waitpoint(held, poll: 30).status == .completed)
        await database.close()
    }

    @Test func timeoutsFire() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let id = try await stack.waitpointId(["session": .string(session.id), "io": "out", "timeout": "1s"])
        let done = try await stack.waitpoint(id, poll: 60)
        #expect(done.status == .timedOut)
        #expect(done.output?.isError == true)
        _ = try await stack.appended(session.id, "too late")
        #expect(try await stack.waitpoint(id).status == .timedOut, "settles once")
    }

    @Test func idempotencyKeysReturnTheSameWaitpointUntilTheirTTL() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let key = TestServers.uniqueName("idem")
        let body: [String: JSONValue] = ["session": .string(session.id), "io": "in", "idempotencyKey": .string(key)]
        let first = try await stack.wait(body)
        let again = try await stack.wait(body)
        let firstBody = try JSONDecoder().decode(ServicesFixture.WaitBody.self, from: first.body)
        let againBody = try JSONDecoder().decode(ServicesFixture.WaitBody.self, from: again.body)
        #expect(!firstBody.isCached && againBody.isCached && firstBody.waitpointId == againBody.waitpointId)
        var expiring = body
        expiring["idempotencyKey"] = .string(key + "-ttl")
        expiring["idempotencyKeyTTL"] = "1s"
        let short = try await stack.waitpointId(expiring)
        let expired = try await TestServers.waitUntil(timeout: .seconds(5)) {
            try await stack.waitpointId(expiring) != short
        }
        #expect(expired, "a new waitpoint once the key's TTL passed")
    }

    @Test func badWaitsGetClearErrors() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let cases: [([String: JSONValue], Int, String)] = [
            (["io": "in"], 400, "session"),
            // Names are trimmed: a blank one names nothing.
            (["session": "   ", "io": "in"], 400, "session must be 1-256 characters long"),
            (["session": .string(session.id), "io": "sideways"], 400, "io must be out or in"),
            (["session": .string(session.id), "io": "in", "timeout": "soon"], 400, "timeout"),
            (
                ["session": .string(session.id), "io": "in", "idempotencyKey": "k", "idempotencyKeyTTL": "5 minutes"],
                400, "idempotencyKeyTTL"
            ),
            (
                ["session": .string(session.id), "io": "in", "tags": .array((0..<11).map { .string("t\($0)") })], 400,
                "10 tags"
            ),
            (["session": .string(session.id), "io": "in", "lastSeqNum": -2], 400, "lastSeqNum"),
            (["session": .string(session.id), "io": "in", "timeout": "9999999999999w"], 400, "timeout"),
            (["session": .string(session.id), "io": "in", "timeout": "2300-01-01T00:00:00Z"], 400, "timeout"),
            (
                [
                    "session": .string(session.id), "io": "in", "idempotencyKey": "k",
                    "idempotencyKeyTTL": "99999999999999d",
                ],
                400, "idempotencyKeyTTL"
            ),
            (
                ["session": .string(session.id), "io": "in", "idempotencyKey": "k", "idempotencyKeyTTL": "1h30m"],
                400, "idempotencyKeyTTL must look like"
            ),
            (
                ["session": .string(session.id), "io": "in", "tags": ["a", "b\u{0}"]], 400,
                "tags[1] must not contain NUL"
            ),
            (["session": .string(session.id), "io": "in", "idempotencyKey": "k\u{0}"], 400, "idempotencyKey must not"),
            (
                ["session": .string(session.id), "io": "in", "idempotencyKey": "k", "idempotencyKeyTTL": "0s"],
                400, "idempotencyKeyTTL must be longer than zero"
            ),
            (
                ["session": .string(session.id), "io": "in", "timeout": "99999d"], 400,
                "timeout must be at most 100 years"
            ),
            (
                ["session": .string(session.id), "io": "in", "timeout": "2h1h"], 400,
                "timeout must be an ISO-8601 date or"
            ),
            (
                ["session": .string(session.id), "io": "in", "timeout": "2030-01-01T00:00:00"], 400,
                "timeout must be an ISO-8601 date with a time zone"
            ),
            (
                [
                    "session": .string(session.id), "io": "in",
                    "idempotencyKey": .string("k" + String(repeating: "\u{301}", count: 600)),
                ],
                400, "idempotencyKey must be at most 1024 bytes"
            ),
            (["session": "session_nosuchsession", "io": "in"], 404, "Session not found"),
        ]
        for (body, status, mention) in cases {
            let response = try await stack.wait(body)
            #expect(response.status == status, "\(body)")
            #expect(String(decoding: response.body, as: UTF8.self).contains(mention), "\(body)")
        }
        let blankRun = try await stack.wait(["session": .string(session.id), "io": "in"], run: "%20")
        #expect(blankRun.status == 400 && String(decoding: blankRun.body, as: UTF8.self).contains("Invalid run id"))
        let jwt = try await stack.wait(["session": .string(session.id), "io": "in"], key: session.token)
        #expect(jwt.status == 403)
        let unknown = try await stack.http.execute(
            HTTPRequest(url: stack.waitpoints.baseURL + "/api/v1/waitpoints/waitpoint_nope", headers: stack.auth)
        )
        #expect(unknown.status == 404)
        let badPoll = try await stack.http.execute(
            HTTPRequest(
                url: stack.waitpoints.baseURL + "/api/v1/waitpoints/waitpoint_nope/wait?timeout=0",
                headers: stack.auth
            )
        )
        #expect(badPoll.status == 400)
    }
}

/// A waitpoints instance of its own (own database, Redis database and consumer), so that the
/// shared one cannot complete its waiters while it is stopped or its Redis is flushed.
@Suite(.serialized, .timeLimit(.minutes(2))) struct WaitpointRecoveryTests {
    func isolatedWaitpoints(_ overrides: [String: String] = [:]) async throws -> (ServiceProcess, [String: String]) {
        let (database, databaseURL) = try Self.freshDatabase()
        let redisURL = try TestServers.redisURL + "/7"
        let environment = [
            "SESSIONS_DATABASE_URL": databaseURL, "SESSIONS_REDIS_URL": redisURL,
            "SESSIONS_WAITPOINT_CONSUMER": database, "SESSIONS_WAITPOINT_SWEEP_MS": "100",
        ].merging(overrides) { $1 }
        return (try ServiceProcess(.waitpoints, extraEnvironment: environment), environment)
    }

    /// A waitpoints service of its own, started and ready.
    func readyWaitpoints(_ stack: ServicesFixture) async throws -> (ServiceProcess, [String: String]) {
        let (service, environment) = try await isolatedWaitpoints()
        try service.start()
        #expect(try await service.waitUntilReady(stack.http), "\(service.output)")
        return (service, environment)
    }

    /// A new, empty database on the test PostgreSQL: its name and URL.
    static func freshDatabase() throws -> (name: String, url: String) {
        let database = TestServers.uniqueName("wp")
        let admin = try TestServers.databaseURL
        let create = Process()
        create.executableURL = URL(fileURLWithPath: "/usr/bin/psql")
        create.arguments = [admin, "-q", "-c", "CREATE DATABASE \(database)"]
        try create.run()
        create.waitUntilExit()
        #expect(create.terminationStatus == 0)
        return (
            database, admin.replacingOccurrences(of: #"/[^/]+$"#, with: "/\(database)", options: .regularExpression)
        )
    }

    /// A waitpoints service of its own whose Redis is unreachable, started.
    func startedWithoutRedis(_ stack: ServicesFixture) async throws -> ServiceProcess {
        let unreachable = "redis://127.0.0.1:\(try TestServers.freePort())"
        let (service, _) = try await isolatedWaitpoints(["SESSIONS_REDIS_URL": unreachable])
        try await startAlive(service, stack)
        return service
    }

    /// Starts `service` and waits until it answers (it may not be ready: a dependency is down).
    func startAlive(_ service: ServiceProcess, _ stack: ServicesFixture) async throws {
        try service.start()
        let alive = try await TestServers.waitUntil {
            try await stack.http.execute(HTTPRequest(url: service.baseURL + "/healthz", timeout: .seconds(1))).status
                == 200
        }
        #expect(alive, "\(service.output)")
    }

    /// Starts `service`, expects waitpoint `id` to complete with `value` through it, and stops it.
    func expectCompletion(
        of id: String,
        with value: String,
        startingOn service: ServiceProcess,
        _ stack: ServicesFixture
    ) async throws {
        try service.start()
        #expect(try await service.waitUntilReady(stack.http), "\(service.output)")
        do {
            let done = try await stack.waitpoint(id, base: service.baseURL, poll: 60)
            #expect(done.status == .completed && done.output?.value == value, "\(service.output)")
        } catch {
            Issue.record(error, "\(service.output)")
        }
        _ = try await service.terminate(timeout: .seconds(10))
    }

    @Test func anAppendWhileTheServiceIsDownCompletesItsWaiterOnceItIsBack() async throws {
        let stack = try await ServicesFixture.shared.value
        let (first, environment) = try await readyWaitpoints(stack)
        let session = try await stack.createSession()
        let id = try await stack.waitpointId(["session": .string(session.id), "io": "in"], base: first.baseURL)
        #expect(try await first.terminate(timeout: .seconds(10)) == 0)
        _ = try await stack.appended(session.id, "while you were out", io: "in")
        let second = try ServiceProcess(.waitpoints, extraEnvironment: environment)
        try await expectCompletion(of: id, with: "while you were out", startingOn: second, stack)
    }

    @Test func waitersCompleteWhileRedisIsDown() async throws {
        let stack = try await ServicesFixture.shared.value
        let service = try await startedWithoutRedis(stack)
        let session = try await stack.createSession()
        let id = try await stack.waitpointId(["session": .string(session.id), "io": "in"], base: service.baseURL)
        _ = try await stack.appended(session.id, "without redis", io: "in")
        let done = try await stack.waitpoint(id, base: service.baseURL, poll: 60)
        #expect(done.status == .completed && done.output?.value == "without redis", "\(service.output)")
        _ = try await service.terminate(timeout: .seconds(10))
    }

    @Test func timeoutsFireWhileRedisIsDown() async throws {
        let stack = try await ServicesFixture.shared.value
        let service = try await startedWithoutRedis(stack)
        let session = try await stack.createSession()
        let id = try await stack.waitpointId(
            ["session": .string(session.id), "io": "in", "timeout": "1s"],
            base: service.baseURL
        )
        let done = try await stack.waitpoint(id, base: service.baseURL, poll: 30)
        #expect(done.status == .timedOut, "\(service.output)")
        _ = try await service.terminate(timeout: .seconds(10))
    }

    @Test func aWaiterRedisCouldNotTakeIsRegisteredByTheSweeper() async throws {
        let stack = try await ServicesFixture.shared.value
        let unreachable = "redis://127.0.0.1:\(try TestServers.freePort())"
        let (second, environment) = try await isolatedWaitpoints()
        let first = try ServiceProcess(
            .waitpoints,
            extraEnvironment: environment.merging(["SESSIONS_REDIS_URL": unreachable]) { $1 }
        )
        try await startAlive(first, stack)
        let session = try await stack.createSession()
        let id = try await stack.waitpointId(["session": .string(session.id), "io": "in"], base: first.baseURL)
        // Operators see it: one pending waitpoint (of this database), not in the registry.
        let reported = try await TestServers.waitUntil {
            let pending = try await first.metric("waitpoints_pending", stack.http)
            let unregistered = try await first.metric("waitpoints_unregistered", stack.http)
            return pending == 1 && unregistered == 1
        }
        #expect(reported, "\(first.output)")
        _ = try await first.terminate(timeout: .seconds(10))
        _ = try await stack.appended(session.id, "registered late", io: "in")
        // A registry that looks complete: a drain finds the channel's set empty and, without the
        // mark the failed registration left in PostgreSQL, nothing would complete the waiter.
        let redis = try RedisClient(configuration: .init(url: environment["SESSIONS_REDIS_URL"]!))
        _ = try await redis.command("SET", "ssw2:epoch", "test")
        await redis.close()
        try await expectCompletion(of: id, with: "registered late", startingOn: second, stack)
    }

    @Test func recordsWithoutWaitersAreHandledWithoutPostgres() async throws {
        let stack = try await ServicesFixture.shared.value
        let (service, _) = try await readyWaitpoints(stack)
        func handled(_ consulted: String) async throws -> Int {
            let series = #"waitpoints_appended_records_total{consulted="\#(consulted)"}"#
            return try await service.metric(series, stack.http).map { Int($0) } ?? 0
        }
        // A waiter completed by an append shows that the service reads appended records.
        let session = try await stack.createSession()
        let id = try await stack.waitpointId(["session": .string(session.id), "io": "in"], base: service.baseURL)
        _ = try await stack.appended(session.id, "awaited", io: "in")
        #expect(try await stack.waitpoint(id, base: service.baseURL, poll: 60).status == .completed)
        let settled = try await handled("postgres")
        #expect(settled >= 1)
        // A waiter on the other channel is not one these appends are for: Redis keeps it.
        let later = try await stack.waitpointId(["session": .string(session.id), "io": "in"], base: service.baseURL)
        for index in 0..<3 { _ = try await stack.appended(session.id, "unawaited \(index)", io: "out") }
        let seen = try await TestServers.waitUntil { try await handled("redis") >= 3 }
        #expect(seen, "\(service.output)")
        #expect(try await handled("postgres") == settled)
        #expect(try await stack.waitpoint(later, base: service.baseURL).status == .pending)
        let reported = try await TestServers.waitUntil {
            let pending = try await service.metric("waitpoints_pending", stack.http)
            let unregistered = try await service.metric("waitpoints_unregistered", stack.http)
            let backlog = try await service.metric("waitpoints_appended_records_backlog", stack.http)
            return pending == 1 && unregistered == 0 && backlog == 0
        }
        #expect(reported, "the later waiter is pending and registered; every appended record handled")
        _ = try await service.terminate(timeout: .seconds(10))
    }

    @Test func aDeletedConsumerIsMadeAgain() async throws {
        let stack = try await ServicesFixture.shared.value
        let (service, environment) = try await readyWaitpoints(stack)
        let durable = try #require(environment["SESSIONS_WAITPOINT_CONSUMER"])
        let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "operator"))
        func consumerExists() async throws -> Bool {
            let info = try await connection.request("$JS.API.CONSUMER.INFO.\(Subjects.channelStream).\(durable)")
            return !String(decoding: info.payload, as: UTF8.self).contains(#""error""#)
        }
        #expect(try await consumerExists())
        let session = try await stack.createSession()
        let early = try await stack.waitpointId(["session": .string(session.id), "io": "in"], base: service.baseURL)
        // An operator (or a stream rebuilt under it) removes the durable consumer; a record
        // appended before the service makes a new one (which starts at new records) is not read.
        _ = try await connection.request("$JS.API.CONSUMER.DELETE.\(Subjects.channelStream).\(durable)")
        _ = try await stack.appended(session.id, "while no consumer was there", io: "in")
        #expect(
            try await TestServers.waitUntil(timeout: .seconds(20)) { try await consumerExists() },
            "\(service.output)"
        )
        let missed = try await stack.waitpoint(early, base: service.baseURL, poll: 60)
        #expect(missed.output?.value == "while no consumer was there", "the sweeper checked the channel")
        let id = try await stack.waitpointId(["session": .string(session.id), "io": "in"], base: service.baseURL)
        _ = try await stack.appended(session.id, "after the rebuild", io: "in")
        let done = try await stack.waitpoint(id, base: service.baseURL, poll: 60)
        #expect(done.status == .completed && done.output?.value == "after the rebuild", "\(service.output)")
        await connection.close()
        _ = try await service.terminate(timeout: .seconds(10))
    }

    @Test func waitersStillCompleteAfterRedisLostItsData() async throws {
        let stack = try await ServicesFixture.shared.value
        let (service, environment) = try await readyWaitpoints(stack)
        let session = try await stack.createSession()
        let id = try await stack.waitpointId(["session": .string(session.id), "io": "in"], base: service.baseURL)
        let redis = try RedisClient(configuration: .init(url: environment["SESSIONS_REDIS_URL"]!))
        _ = try await redis.command("FLUSHDB")
        await redis.close()
        _ = try await stack.appended(session.id, "after the flush", io: "in")
        let done = try await stack.waitpoint(id, base: service.baseURL, poll: 60)
        #expect(done.status == .completed && done.output?.value == "after the flush", "\(service.output)")
        _ = try await service.terminate(timeout: .seconds(10))
    }
}
