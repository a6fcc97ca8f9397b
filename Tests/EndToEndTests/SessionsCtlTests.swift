import Contracts
import Foundation
import TestSupport
import Testing

/// `sessionsctl` as a user runs it, against the real services. Each command talks to the one
/// service that serves its routes (no ingress in the fixture).
@Suite(.timeLimit(.minutes(2))) struct SessionsCtlTests {
    let stack: ServicesFixture

    init() async throws { stack = try await ServicesFixture.shared.value }

    var controlPlane: String { stack.controlPlane.baseURL }
    var realtime: String { stack.realtime[0].baseURL }

    /// Starts `sessionsctl` with the URL and key in its environment, as `source .dev/sessions.env` sets them.
    func CLI(_ arguments: [String], url: String, apiKey: String?, stdin: String? = nil) throws -> Command {
        var environment = ["SESSIONS_URL": url, "PATH": "/usr/bin:/bin"]
        environment["SESSIONS_API_KEY"] = apiKey
        return try Command(
            ServiceProcess.binaryDirectory.appendingPathComponent("sessionsctl"),
            arguments,
            environment: environment,
            stdin: stdin
        )
    }

    /// Runs a command to its end; returns status, stdout and stderr.
    func run(
        _ arguments: [String],
        url: String? = nil,
        apiKey: String? = nil,
        stdin: String? = nil
    ) async throws -> (status: Int32, output: String, errors: String) {
        let cli = try CLI(arguments, url: url ?? controlPlane, apiKey: apiKey ?? stack.apiKey, stdin: stdin)
        let status = try await cli.finish(timeout: .seconds(60))
        return (status, cli.output, cli.errors)
    }

    @Test func envCreatePrintsExportsOfAKeyThatWorks() async throws {
        let organization = TestServers.uniqueName("cli")
        let arguments = ["env", "create", "--organization", organization, "--project", "p", "--type", "staging"]
        let denied = try await run(arguments + ["--admin-token", "not-the-admin-token"])
        #expect(denied.status == 4)
        #expect(denied.errors.contains("Invalid admin token"))
        let created = try await run(arguments + ["--admin-token", ServicesFixture.adminToken])
        #expect(created.status == 0, "\(created.errors)")
        let exports = Dictionary(
            uniqueKeysWithValues: created.output.split(separator: "\n").compactMap { line -> (String, String)? in
                let parts = line.dropFirst("export ".count).split(separator: "=", maxSplits: 1)
                return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
            }
        )
        let key = try #require(exports["SESSIONS_API_KEY"])
        #expect(key.hasPrefix("tr_stg_"))
        #expect(exports["SESSIONS_URL"] == controlPlane)
        #expect(exports["SESSIONS_ENV_ID"]?.isEmpty == false)
        let made = try await run(["create", "--type", "demo"], apiKey: key)
        #expect(made.status == 0, "\(made.errors)")
    }

    @Test func createGetAppendTailAndClose() async throws {
        let externalId = TestServers.uniqueName("cli-chat")
        let created = try await run(["create", "--type", "chat.agent", "--external-id", externalId, "--tag", "cli"])
        #expect(created.status == 0, "\(created.errors)")
        let id = try #require(created.output.split(separator: " ").first.map(String.init))
        #expect(id.hasPrefix("session_"))
        #expect(created.output.contains("created"))
        let again = try await run(["create", "--type", "chat.agent", "--external-id", externalId, "--json"])
        #expect(again.output.contains(#""isCached":true"#))
        #expect(again.output.contains(#""id":"\#(id)""#))

        let shown = try await run(["get", externalId])
        #expect(shown.status == 0)
        #expect(shown.output.hasPrefix(id))
        #expect(shown.output.contains("ACTIVE"))

        let first = try await run(["append", externalId, "hello"], url: realtime)
        #expect(first.output == "appended \(externalId).out seq 0\n", "\(first.errors)")
        let piped = try await run(["append", externalId, "--part-id", "p-1"], url: realtime, stdin: "from stdin")
        #expect(piped.output.hasSuffix("seq 1\n"), "\(piped.errors)")
        let retried = try await run(["append", externalId, "--part-id", "p-1", "ignored"], url: realtime)
        #expect(retried.output.hasSuffix("seq 1\n"), "a retried part id writes nothing")
        _ = try await run(["append", externalId, #"{"n":3}"#], url: realtime)

        let history = try await run(["tail", externalId, "--no-follow"], url: realtime)
        #expect(history.status == 0, "\(history.errors)")
        #expect(history.output == "hello\nfrom stdin\n{\"n\":3}\n")
        let lastOne = try await run(["tail", id, "--no-follow", "--last", "1", "--json"], url: realtime)
        #expect(lastOne.output.contains(#""seqNum":2"#))
        #expect(lastOne.output.split(separator: "\n").count == 1)
        let fromOne = try await run(["tail", id, "--no-follow", "--from", "1", "--json"], url: realtime)
        #expect(fromOne.output.contains(#""id":"p-1""#))
        #expect(fromOne.output.split(separator: "\n").count == 2)

        let closed = try await run(["close", externalId, "--reason", "done"])
        #expect(closed.status == 0)
        #expect(closed.output.contains("closed at"))
        #expect(closed.output.contains("done"))
        let refused = try await run(["append", externalId, "late"], url: realtime)
        #expect(refused.status == 2)
        #expect(refused.errors.contains("Cannot append to a closed session"))
        let afterClose = try await run(["tail", externalId, "--no-follow"], url: realtime)
        #expect(afterClose.output.split(separator: "\n").count == 3, "history stays readable")
    }

    @Test func tailFollowsLiveAndResumesAfterTheServerEndsTheStream() async throws {
        let session = try await stack.createSession()
        _ = try await stack.appended(session.id, "before")
        // The server ends an idle stream after 1 s; tail must reconnect from where it was.
        let tail = try CLI(["tail", session.id, "--idle-timeout", "1"], url: realtime, apiKey: stack.apiKey)
        defer { tail.process.terminate() }
        #expect(try await TestServers.waitUntil { tail.lines == ["before"] })
        _ = try await stack.appended(session.id, "live 1")
        #expect(try await TestServers.waitUntil { tail.lines == ["before", "live 1"] })
        // Past at least one idle end and reconnect.
        try await Task.sleep(for: .milliseconds(2_500))
        _ = try await stack.appended(session.id, "after reconnect")
        #expect(
            try await TestServers.waitUntil { tail.lines == ["before", "live 1", "after reconnect"] },
            "\(tail.output) \(tail.errors)"
        )
    }

    @Test func tailOfAnExternalIdBeforeItsSessionExistsWaitsForIt() async throws {
        let externalId = TestServers.uniqueName("later")
        let missing = try await run(["tail", externalId, "--no-follow"], url: realtime)
        #expect(missing.status == 3)
        #expect(missing.errors.contains("not found"))
        let tail = try CLI(["tail", externalId], url: realtime, apiKey: stack.apiKey)
        defer { tail.process.terminate() }
        try await Task.sleep(for: .milliseconds(500))
        #expect(tail.process.isRunning, "tail waits for the session: \(tail.errors)")
        _ = try await stack.createSession(externalId: externalId)
        _ = try await stack.appended(externalId, "first")
        #expect(try await TestServers.waitUntil { tail.lines == ["first"] }, "\(tail.output) \(tail.errors)")
    }

    @Test func listFiltersAndPrintsATable() async throws {
        let tag = TestServers.uniqueName("t")
        for index in 0..<3 {
            _ = try await run(["create", "--type", "cli.list", "--tag", tag, "--external-id", "\(tag)-\(index)"])
        }
        // Listing reads ClickHouse, which the replicator fills within a second or so; ask a few
        // times a second, not in a tight loop (the dev server answers one query at a time).
        var replicated = false
        let deadline = ContinuousClock.now + .seconds(30)
        while !replicated && ContinuousClock.now < deadline {
            replicated = try await run(["list", "--tag", tag]).output.split(separator: "\n").count == 4
            if !replicated { try await Task.sleep(for: .milliseconds(300)) }
        }
        #expect(replicated)
        let listed = try await run(["list", "--tag", tag, "--limit", "2"])
        #expect(listed.output.hasPrefix("ID"))
        #expect(listed.output.contains("\(tag)-2"), "newest first")
        #expect(!listed.output.contains("\(tag)-0"))
        // The printed continuation keeps the filters and the limit.
        let hint = try #require(listed.errors.split(separator: "\n").first { $0.hasPrefix("more: sessionsctl list ") })
        let arguments = hint.dropFirst("more: sessionsctl ".count).split(separator: " ").map(String.init)
        #expect(
            arguments.contains("--tag") && arguments.contains("--limit") && arguments.contains("--after"),
            "\(hint)"
        )
        let rest = try await run(arguments)
        #expect(rest.output.contains("\(tag)-0") && !rest.output.contains("\(tag)-1"), "\(rest.output)")
        let json = try await run(["list", "--tag", tag, "--json"])
        #expect(json.output.contains(#""externalId":"\#(tag)-0""#))
        let bad = try await run(["list", "--status", "sleepy"])
        #expect(bad.status == 2)
        #expect(bad.errors.contains("status"))
    }

    /// Going back over more than one page of the server keeps the listing newest first.
    @Test func listGoesBackAcrossPagesNewestFirst() async throws {
        let tag = TestServers.uniqueName("back")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<103 {
                group.addTask {
                    _ = try await run([
                        "create", "--type", "cli.back", "--tag", tag, "--external-id", "\(tag)-\(index)",
                    ])
                }
                if index % 8 == 7 { try await group.waitForAll() }
            }
        }
        func page(_ arguments: [String]) async throws -> SessionPage {
            let listed = try await run(["list", "--tag", tag, "--json"] + arguments)
            return try JSONDecoder.sessions.decode(SessionPage.self, from: Data(listed.output.utf8))
        }
        var replicated = false
        let deadline = ContinuousClock.now + .seconds(30)
        while !replicated && ContinuousClock.now < deadline {
            replicated = try await page(["--limit", "103"]).data.count == 103
            if !replicated { try await Task.sleep(for: .milliseconds(300)) }
        }
        #expect(replicated)
        let all = try await page(["--limit", "103"]).data.map(\.id)
        let first101 = try await page(["--limit", "101"])
        let last2 = try await page(["--after", try #require(first101.pagination.next), "--limit", "2"])
        #expect(last2.data.map(\.id) == Array(all[101...]))
        let back = try await page(["--before", try #require(last2.pagination.previous), "--limit", "101"])
        #expect(back.data.map(\.id) == Array(all[..<101]), "newest first across the two pages it took")
    }

    @Test func waitPrintsTheRecordThatCompletesIt() async throws {
        let session = try await stack.createSession()
        let wait = try CLI(["wait", session.id], url: stack.waitpoints.baseURL, apiKey: stack.apiKey)
        #expect(try await TestServers.waitUntil { wait.errors.contains("waiting on") }, "\(wait.errors)")
        _ = try await stack.appended(session.id, #"{"approved":true}"#, io: "in")
        #expect(try await wait.finish() == 0)
        #expect(wait.output == "{\"approved\":true}\n")

        let timedOut = try await run(["wait", session.id, "--timeout", "1s"], url: stack.waitpoints.baseURL)
        #expect(timedOut.status == 6)
        #expect(timedOut.errors.contains("timed out"))
    }

    @Test func tokensAndFailuresHaveMeaningfulExitCodes() async throws {
        let session = try await stack.createSession()
        let minted = try await run([
            "token", "--scope", "read:sessions:\(session.id)", "--expires-in", "5m",
            "--env-id", stack.environmentId,
        ])
        #expect(minted.status == 0, "\(minted.errors)")
        let token = minted.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try await run(["get", session.id], apiKey: token).status == 0)
        let notAllowed = try await run(["close", session.id], apiKey: token)
        #expect(notAllowed.status == 4)

        #expect(try await run(["get", "session_doesnotexist"]).status == 3)
        let wrongKey = try await run(["get", session.id], apiKey: "tr_dev_wrong")
        #expect(wrongKey.status == 4)
        #expect(wrongKey.errors.contains("Invalid API Key"))
        let unreachable = try await run(["get", session.id], url: "http://127.0.0.1:1")
        #expect(unreachable.status == 5)
        #expect(unreachable.errors.hasPrefix("sessionsctl: cannot reach http://127.0.0.1:1"))
        #expect(!unreachable.errors.contains("Fatal"), "a message, not a stack trace")
        let usage = try await run(["token", "--scope", "fly:away", "--env-id", "x"])
        #expect(usage.status == 64)
        let shortKey = try await run(["token", "--scope", "read:all", "--env-id", "x"], apiKey: "tr_dev_short")
        #expect(shortKey.status == 64 && shortKey.errors.contains("at least 32"), "\(shortKey.errors)")
        let negative = try await run(["list", "--limit", "-5"])
        #expect(negative.status == 64 && negative.errors.contains("--limit must be at least 1"), "\(negative.errors)")
        for empty in [
            ["get", ""], ["wait", session.id, "--run", ""], ["append", "", "x"],
            ["append", session.id, "x", "--part-id", ""],
        ] {
            let refused = try await run(empty)
            #expect(refused.status == 64 && refused.errors.contains("must not be empty"), "\(empty): \(refused.errors)")
        }
        struct Minted: Decodable {
            var token: String
            var scopes: [String]
            var expiresAt: Date
        }
        let json = try await run([
            "token", "--json", "--scope", "read:all", "--expires-in", "5m", "--env-id", stack.environmentId,
        ])
        let parsed = try JSONDecoder.sessions.decode(Minted.self, from: Data(json.output.utf8))
        #expect(parsed.scopes == ["read:all"] && abs(parsed.expiresAt.timeIntervalSinceNow - 300) < 30)
        #expect(try await run(["get", session.id], apiKey: parsed.token).status == 0)
    }
}
