import ClickHouse
import Contracts
import Foundation
import HTTPClient
import Logging
import Postgres
import Redis
import TestSupport
import Testing

@testable import ControlPlane
@testable import Replicator

/// A replicator of its own: own slot, publication and ClickHouse database, so tests never share
/// a leader lock or rows.
struct IsolatedReplicator {
    let name = TestServers.uniqueName("repl")
    let environmentId = TestServers.uniqueName("env")
    var clickhouseURL: String
    let database: PostgresClient
    let clickhouse: ClickHouseClient

    init(clickhouseURL: String? = nil) async throws {
        self.clickhouseURL = try clickhouseURL ?? TestServers.clickhouseURL
        database = PostgresClient(configuration: .init(url: try TestServers.databaseURL, poolSize: 2))
        // The sessions table is the control plane's; a test must not count on another having made it.
        try await ControlPlaneSchema.migrator.run(on: database, logger: Logger(label: "migrations"))
        let admin = ClickHouseClient(configuration: .init(url: self.clickhouseURL), http: HTTPClient())
        try await admin.execute("CREATE DATABASE IF NOT EXISTS \(name)")
        clickhouse = ClickHouseClient(configuration: .init(url: self.clickhouseURL, database: name), http: HTTPClient())
    }

    var environment: [String: String] {
        [
            "SESSIONS_REPLICATION_SLOT": name, "SESSIONS_REPLICATION_PUBLICATION": name + "_publication",
            "SESSIONS_CLICKHOUSE_URL": clickhouseURL, "SESSIONS_CLICKHOUSE_DATABASE": name,
            "SESSIONS_REPLICATION_LOCK_TTL_SECONDS": "2", "SESSIONS_REPLICATION_FLUSH_MS": "50",
        ]
    }

    func process(_ overrides: [String: String] = [:]) throws -> ServiceProcess {
        try ServiceProcess(.replicator, extraEnvironment: environment.merging(overrides) { $1 })
    }

    /// Inserts sessions of this test's environment straight into PostgreSQL.
    func insert(_ count: Int, from start: Int = 0) async throws {
        for index in start..<start + count {
            let id = "\(name)_\(index)"
            try await database.query(
                """
                INSERT INTO sessions (id, friendly_id, type, tags, organization_id, project_id, runtime_environment_id,
                    environment_type, external_id)
                VALUES (\(id), \("session_" + id), 'replicated', \(["t\(index % 3)"]), 'org', 'project', \(environmentId),
                    'DEVELOPMENT', \("ext-\(index)"))
                """
            )
        }
    }

    /// The environment's rows in PostgreSQL and ClickHouse (latest version, not deleted), as
    /// comparable text.
    func snapshots() async throws -> (postgres: [String], clickhouse: [String]) {
        let postgres = try await database.query(
            """
            SELECT id || '|' || type || '|' || coalesce(external_id, '') || '|' || array_to_string(tags, ',') || '|'
                || coalesce(closed_reason, '') AS line
            FROM sessions WHERE runtime_environment_id = \(environmentId) ORDER BY id
            """
        ).map { try $0.decode("line", as: String.self) }
        struct Line: Decodable { var line: String }
        let clickhouse = try await self.clickhouse.query(
            """
            SELECT session_id || '|' || type || '|' || external_id || '|' || arrayStringConcat(tags, ',') || '|'
                || closed_reason AS line
            FROM sessions_v1 FINAL WHERE environment_id = {environment:String} AND _is_deleted = 0 ORDER BY session_id
            """,
            parameters: ["environment": .text(environmentId)],
            as: Line.self
        ).map(\.line)
        // Compared as sorted text: PostgreSQL's collation and ClickHouse order strings differently.
        return (postgres.sorted(), clickhouse.sorted())
    }

    func converged(timeout: Duration = .seconds(60)) async throws -> Bool {
        let done = try await TestServers.waitUntil(timeout: timeout) {
            let (postgres, clickhouse) = try await snapshots()
            return !postgres.isEmpty && postgres == clickhouse
        }
        if !done {
            do {
                let (postgres, clickhouse) = try await snapshots()
                print(
                    "not converged: postgres \(postgres.count) rows, clickhouse \(clickhouse.count);",
                    "only in postgres: \(Set(postgres).subtracting(clickhouse).sorted().prefix(3)),",
                    "only in clickhouse: \(Set(clickhouse).subtracting(postgres).sorted().prefix(3))"
                )
            } catch {
                print("not converged: \(error)")
            }
        }
        return done
    }

    /// Drops the slot and publication (after the replicators stopped) so the server keeps no WAL for them.
    func cleanUp() async {
        _ = try? await TestServers.waitUntil(timeout: .seconds(10)) {
            guard
                let slot = try await database.query(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = \(name)"
                ).first
            else { return true }
            guard try !slot.decode("active", as: Bool.self) else { return false }
            try await database.query("SELECT pg_drop_replication_slot(\(name))")
            return true
        }
        _ = try? await database.query("DROP PUBLICATION IF EXISTS \(identifier: name + "_publication")")
        _ = try? await database.query("DELETE FROM sessions WHERE runtime_environment_id = \(environmentId)")
        await database.close()
    }
}

@Suite(.serialized, .timeLimit(.minutes(3))) struct ReplicationTests {
    @Test func insertsUpdatesAndDeletesReachClickHouseAndAKill9LosesNothing() async throws {
        let replication = try await IsolatedReplicator()
        var replicator = try replication.process()
        try replicator.start()
        try await replication.insert(50)
        #expect(try await replication.converged(), "\(replicator.output)")
        try await replication.database.query(
            "UPDATE sessions SET tags = '{updated}', updated_at = now() WHERE runtime_environment_id = \(replication.environmentId) AND id LIKE '%1'"
        )
        try await replication.database.query(
            "DELETE FROM sessions WHERE runtime_environment_id = \(replication.environmentId) AND id LIKE '%2'"
        )
        #expect(try await replication.converged(), "updates and deletes:\n\(replicator.output)")
        // kill -9 while writes keep coming, then start again: everything arrives.
        let writer = Task { try await replication.insert(200, from: 100) }
        _ = try await TestServers.waitUntil { try await replication.snapshots().clickhouse.count > 80 }
        kill(replicator.process.processIdentifier, SIGKILL)
        try await writer.value
        try await replication.database.query(
            "UPDATE sessions SET closed_at = now(), closed_reason = 'done' WHERE runtime_environment_id = \(replication.environmentId) AND id LIKE '%5'"
        )
        replicator = try replication.process()
        try replicator.start()
        #expect(try await replication.converged(), "after kill -9 and restart:\n\(replicator.output)")
        let (postgres, _) = try await replication.snapshots()
        #expect(postgres.count == 50 - 5 + 200, "inserted minus deleted")
        #expect(try await replicator.terminate(timeout: .seconds(10)) == 0, "\(replicator.output)")
        #expect(replicator.output.contains("Replication flushed and acknowledged."))
        await replication.cleanUp()
    }

    @Test func rowsWrittenWhileClickHouseIsDownArriveAfterItIsBackAndTheWALIsReleased() async throws {
        let port = try TestServers.freePort()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent(TestServers.uniqueName("ch")).path
        func startClickHouse() throws -> Process {
            let server = TestServers.repositoryRoot.appendingPathComponent("tools/clickhouse-dev-server/server.py")
            let process = Process()
            process.executableURL = try TestServers.python
            process.arguments = [server.path, "--data", folder, "--port", String(port)]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            return process
        }
        var clickhouse = try startClickHouse()
        let http = HTTPClient()
        #expect(
            try await TestServers.waitUntil(timeout: .seconds(60)) {
                try await http.execute(HTTPRequest(url: "http://127.0.0.1:\(port)/ping", timeout: .seconds(1))).status
                    == 200
            }
        )
        let replication = try await IsolatedReplicator(clickhouseURL: "http://127.0.0.1:\(port)")
        let replicator = try replication.process()
        try replicator.start()
        try await replication.insert(20)
        #expect(try await replication.converged(timeout: .seconds(60)), "\(replicator.output)")

        kill(clickhouse.processIdentifier, SIGKILL)
        #expect(try await TestServers.waitUntil { !clickhouse.isRunning })
        try await replication.insert(30, from: 100)
        let written = try await replication.database.query("SELECT pg_current_wal_lsn()::text AS lsn").first!.decode(
            "lsn",
            as: String.self
        )
        // ClickHouse stays down until the lag metric shows the stall (5 s or more).
        func lag() async throws -> Double? { try await replicator.metric("replicator_replication_lag_seconds", http) }
        #expect(try await TestServers.waitUntil(timeout: .seconds(30)) { try await lag() ?? 0 >= 5 })
        clickhouse = try startClickHouse()
        #expect(
            try await replication.converged(timeout: .seconds(60)),
            "after ClickHouse came back:\n\(replicator.output)"
        )
        #expect(try await TestServers.waitUntil { try await lag() == 0 }, "caught up, the lag is back to 0")
        #expect(try await replication.snapshots().clickhouse.count == 50)
        let released = try await TestServers.waitUntil(timeout: .seconds(15)) {
            try await !replication.database.query(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = \(replication.name) AND confirmed_flush_lsn >= \(written)::pg_lsn"
            ).isEmpty
        }
        #expect(released, "the slot was acknowledged past the rows once ClickHouse had them")
        #expect(try await replicator.terminate(timeout: .seconds(10)) == 0)
        kill(clickhouse.processIdentifier, SIGKILL)
        await http.close()
        await replication.cleanUp()
    }

    @Test func oneOfTwoReplicatorsLeadsAndTheOtherTakesOverWhenItDies() async throws {
        let replication = try await IsolatedReplicator()
        let first = try replication.process()
        let second = try replication.process()
        try first.start()
        try second.start()
        let redis = try RedisClient(configuration: .init(url: try TestServers.redisURL))
        #expect(
            try await TestServers.waitUntil {
                first.output.contains("Leading replication.") || second.output.contains("Leading replication.")
            }
        )
        try await replication.insert(10)
        #expect(try await replication.converged())
        let leaders = [first, second].filter { $0.output.contains("Leading replication.") }
        #expect(leaders.count == 1, "exactly one leads")
        let leader = try #require(leaders.first)
        let standby = leader === first ? second : first
        let http = HTTPClient()
        #expect(try await leader.metric("replicator_leader", http) == 1)
        #expect(try await standby.metric("replicator_leader", http) == 0)
        #expect(try await redis.command("EXISTS", "replicator:leader:\(replication.name)").integer == 1)
        kill(leader.process.processIdentifier, SIGKILL)
        #expect(
            try await TestServers.waitUntil(timeout: .seconds(15)) { standby.output.contains("Leading replication.") },
            "\(standby.output)"
        )
        try await replication.insert(10, from: 50)
        #expect(try await replication.converged(), "the new leader replicates:\n\(standby.output)")
        #expect(try await standby.metric("replicator_leader", http) == 1)
        #expect(try await standby.terminate(timeout: .seconds(10)) == 0)
        await http.close()
        await redis.close()
        await replication.cleanUp()
    }

    @Test func theLeaderKeepsItsLockThroughABackfillLongerThanTheLockTTL() async throws {
        let replication = try await IsolatedReplicator()
        // A new slot copies every existing row first; one row per batch makes that copy outlast
        // the 2-second TTL several times over.
        try await replication.insert(1000)
        let replicator = try replication.process(["SESSIONS_REPLICATION_BATCH_SIZE": "1"])
        try replicator.start()
        let redis = try RedisClient(configuration: .init(url: try TestServers.redisURL))
        let key = "replicator:leader:\(replication.name)"
        #expect(try await TestServers.waitUntil { try await redis.command("GET", key).string != nil })
        let holder = try await redis.command("GET", key).string
        let start = ContinuousClock.now
        var held = true
        // Watch the lock until the copy is done.
        while held && !replicator.output.contains("Copied the existing sessions")
            && ContinuousClock.now - start < .seconds(90)
        {
            held = try await redis.command("GET", key).string == holder
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(held, "the lock lapsed or changed hands during the copy")
        #expect(ContinuousClock.now - start > .seconds(6), "the copy outlasted the TTL three times over")
        kill(replicator.process.processIdentifier, SIGKILL)
        await redis.close()
        await replication.cleanUp()
    }

    @Test func aReplicatorCreatingItsSlotBehindAnOpenTransactionStopsAtOnceOnSIGTERM() async throws {
        let replication = try await IsolatedReplicator()
        // Creating a logical slot waits until every transaction that holds an id now has ended.
        let holder = Task {
            try await replication.database.withTransaction { connection in
                _ = try await connection.query("SELECT txid_current()")
                _ = try await connection.query("SELECT pg_sleep(60)")
            }
        }
        #expect(
            try await TestServers.waitUntil {
                try await !replication.database.query(
                    "SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'"
                ).isEmpty
            }
        )
        let replicator = try replication.process()
        try replicator.start()
        #expect(
            try await TestServers.waitUntil {
                try await !replication.database.query(
                    """
                    SELECT 1 FROM pg_stat_activity
                    WHERE query LIKE 'SELECT pg_create_logical_replication_slot%' AND state = 'active'
                    """
                ).isEmpty
            },
            "\(replicator.output)"
        )
        #expect(replicator.output.contains("Creating the replication slot"), "\(replicator.output)")
        let start = ContinuousClock.now
        #expect(
            try await replicator.terminate(timeout: .seconds(5)) == 0,
            "the replicator stopped within 5 s:\n\(replicator.output)"
        )
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(!replicator.output.contains("Replication stopped"), "\(replicator.output)")
        let slots = try await replication.database.query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = \(replication.name)"
        )
        #expect(slots.isEmpty, "the slot's creation was called off")
        holder.cancel()
        _ = await holder.result
        await replication.cleanUp()
    }

    @Test func aReplicatorStartedBeforeTheControlPlaneWaitsQuietlyForTheSessionsTable() async throws {
        let replication = try await IsolatedReplicator()
        let database = TestServers.uniqueName("fresh")
        let admin = try TestServers.databaseURL
        let created = try await replication.database.query("CREATE DATABASE \(identifier: database)")
        #expect(created.isEmpty)
        let url = admin.replacingOccurrences(of: #"/[^/]+$"#, with: "/\(database)", options: .regularExpression)
        let replicator = try replication.process(["SESSIONS_DATABASE_URL": url])
        try replicator.start()
        #expect(
            try await TestServers.waitUntil {
                replicator.output.contains("Waiting for the control plane to create the sessions table.")
            },
            "\(replicator.output)"
        )
        let fresh = PostgresClient(configuration: .init(url: url, poolSize: 1))
        try await ControlPlaneSchema.migrator.run(on: fresh, logger: Logger(label: "migrations"))
        #expect(
            try await TestServers.waitUntil(timeout: .seconds(20)) {
                try await !fresh.query(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = \(replication.name)"
                ).isEmpty
            },
            "the replicator made its slot once the table was there:\n\(replicator.output)"
        )
        #expect(!replicator.output.contains("Replication stopped"), "\(replicator.output)")
        #expect(try await replicator.terminate(timeout: .seconds(10)) == 0)
        _ = try await TestServers.waitUntil(timeout: .seconds(10)) {
            try await fresh.query(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = \(replication.name) AND NOT active"
            ).count == 1
        }
        await fresh.close()
        _ = try await replication.database.query("DROP DATABASE \(identifier: database) WITH (FORCE)")
        await replication.cleanUp()
    }
}

@Suite(.timeLimit(.minutes(1))) struct ReplicatorFlushTests {
    /// An insert retries until ClickHouse takes it; when consuming ends with an error, the
    /// next round replays those rows from the slot, so the old insert must stop.
    @Test func insertsStillRetryingStopWhenConsumingEnds() async throws {
        var flushes = Flushes()
        var batch = Batch()
        batch.add(SessionsTable.Row(sessionId: "session_1", sortKey: [], values: [], version: 1))
        flushes.start(batch) { _ in
            while true { try await Task.sleep(for: .milliseconds(10)) }  // ClickHouse is away
        }
        flushes.cancelAll()
        await #expect(throws: CancellationError.self) { try await flushes.waitAll() }
    }
}

@Suite struct SessionsTableTests {
    @Test(arguments: [
        ("2026-11-28 10:00:00.123+00", "2026-11-28 10:00:00.123"),
        ("2026-11-28 10:00:00+00", "2026-11-28 10:00:00.000"),
        ("2026-11-28 10:00:00.1239+00", "2026-11-28 10:00:00.123"),
        ("2026-11-28 23:59:59.999999+00", "2026-11-28 23:59:59.999"),
        ("2026-11-28 15:30:00.5+05:30", "2026-11-28 10:00:00.500"),
        ("2026-11-28 07:00:00-03", "2026-11-28 10:00:00.000"),
        ("2024-02-29 00:00:00+00", "2024-02-29 00:00:00.000"),
    ])
    func replicatedTimesAreClickHouseTimesCutToTheMillisecondAsTheAPICutsThem(text: String, expected: String) throws {
        let date = try #require(PostgresTime.date(text))
        #expect(PostgresTime.clickHouse(date) == expected)
        // The control plane reads the same column as `to_jsonb` writes it and keeps these milliseconds.
        let json = text.replacingOccurrences(of: " ", with: "T") + (text.hasSuffix("+00") ? ":00" : "")
        if text.hasSuffix("+00") { #expect(ISO8601.date(from: json) == date) }
    }

    @Test(arguments: [
        "", "2026-11-28", "2026-11-28T10:00:00+00", "2026-02-30 10:00:00+00", "infinity", "garbage text here!!",
    ])
    func unreadableTimesAreRefused(text: String) {
        #expect(PostgresTime.date(text) == nil)
    }

    @Test func cellsAreTheJSONThatJSONEncoderWrites() throws {
        let text = "quote \" back\\slash / line\nbreak\u{01} ünïcødé 🚀"
        let cells: [SessionsTable.JSONCell] = [.string(text), .strings([text, ""]), .number(42), .null]
        let decoded = try cells.map {
            try JSONSerialization.jsonObject(with: Data($0.json.utf8), options: .fragmentsAllowed)
        }
        #expect(decoded[0] as? String == text)
        #expect(decoded[1] as? [String] == [text, ""])
        #expect((decoded[2] as? NSNumber)?.intValue == 42)
        #expect(decoded[3] is NSNull)
    }
}
