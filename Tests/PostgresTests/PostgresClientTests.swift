import Foundation
import Logging
import Postgres
import TestSupport
import Testing

func makeClient(poolSize: Int = 4) throws -> PostgresClient {
    PostgresClient(configuration: .init(url: try TestServers.databaseURL, poolSize: poolSize))
}

@Suite(.timeLimit(.minutes(1))) struct PostgresClientTests {
    @Test func parametersRoundTripEveryType() async throws {
        let client = try makeClient()
        let when = Date(timeIntervalSince1970: 1_790_000_000.123)
        let tricky = #"it's "quoted"; DROP TABLE x; -- \ back"#
        let rows = try await client.query(
            """
            SELECT \(tricky)::text AS text, \(42)::int AS number, \(true)::bool AS flag,
                   \(when)::timestamptz AS moment, \(["a", "b c", tricky])::text[] AS tags,
                   \(Optional<String>.none)::text AS missing, \(2.5)::float8 AS ratio
            """
        )
        let row = try #require(rows.first)
        #expect(try row.decode("text", as: String.self) == tricky)
        #expect(try row.decode("number", as: Int.self) == 42)
        #expect(try row.decode("flag", as: Bool.self))
        // Timestamps travel with millisecond precision.
        #expect(abs(try row.decode("moment", as: Date.self).timeIntervalSince(when)) < 0.001)
        #expect(try row.decode("tags", as: [String].self) == ["a", "b c", tricky])
        #expect(try row.decode("missing", as: String?.self) == nil)
        #expect(try row.decode("ratio", as: Double.self) == 2.5)
        #expect(throws: PostgresError.self) { try row.decode("missing", as: String.self) }
        await client.close()
    }

    @Test func transactionsCommitOrRollBack() async throws {
        let client = try makeClient()
        let table = TestServers.uniqueName("tx")
        try await client.query("CREATE TABLE \(identifier: table) (id int PRIMARY KEY)")
        _ = try await client.withTransaction { try await $0.query("INSERT INTO \(identifier: table) VALUES (\(1))") }
        struct Abort: Error {}
        await #expect(throws: Abort.self) {
            try await client.withTransaction { connection in
                try await connection.query("INSERT INTO \(identifier: table) VALUES (\(2))")
                throw Abort()
            }
        }
        let ids = try await client.query("SELECT id FROM \(identifier: table) ORDER BY id").map {
            try $0.decode("id", as: Int.self)
        }
        #expect(ids == [1])
        try await client.query("DROP TABLE \(identifier: table)")
        await client.close()
    }

    @Test func statementsArePreparedOnceAndSurviveATableChange() async throws {
        let client = try makeClient(poolSize: 1)
        let table = TestServers.uniqueName("prepared")
        try await client.query("CREATE TABLE \(identifier: table) (id int PRIMARY KEY)")
        try await client.query("INSERT INTO \(identifier: table) VALUES (\(1))")
        func preparedCount() async throws -> Int {
            try await client.query("SELECT count(*)::int AS n FROM pg_prepared_statements")[0].decode("n", as: Int.self)
        }
        func select(_ id: Int) async throws -> [PostgresRow] {
            try await client.query("SELECT * FROM \(identifier: table) WHERE id = \(id)")
        }
        let before = try await preparedCount()
        #expect(try await select(1).count == 1)
        #expect(try await preparedCount() == before + 1, "the first run prepares it")
        #expect(try await select(2).isEmpty)
        #expect(try await preparedCount() == before + 1, "later runs reuse it, whatever the parameters")
        // `SELECT *` now returns another shape: the statement is prepared again.
        try await client.query("ALTER TABLE \(identifier: table) ADD COLUMN name text DEFAULT 'x'")
        let row = try #require(try await select(1).first)
        #expect(try row.decode("name", as: String.self) == "x")
        // Inside a transaction the retry cannot happen; the error is reported, not a crash.
        try await client.query("ALTER TABLE \(identifier: table) ADD COLUMN other int")
        await #expect(throws: PostgresError.self) {
            try await client.withTransaction {
                _ = try await $0.query("SELECT * FROM \(identifier: table) WHERE id = \(1)")
            }
        }
        #expect(try await select(1).first?.decode("other", as: Int?.self) == .some(nil), "and it works after")
        try await client.query("DROP TABLE \(identifier: table)")
        await client.close()
    }

    @Test func serverErrorsKeepTheirSQLState() async throws {
        let client = try makeClient()
        let table = TestServers.uniqueName("unique")
        try await client.query("CREATE TABLE \(identifier: table) (id int PRIMARY KEY)")
        try await client.query("INSERT INTO \(identifier: table) VALUES (\(1))")
        await #expect(throws: PostgresError.self) {
            do {
                try await client.query("INSERT INTO \(identifier: table) VALUES (\(1))")
            } catch let error as PostgresError {
                #expect(error.code == .queryFailed)
                #expect(error.sqlState == PostgresError.uniqueViolation)
                #expect(!error.isRetriable)
                throw error
            }
        }
        // The connection that saw the error is still usable.
        #expect(
            try await client.query("SELECT count(*) AS n FROM \(identifier: table)")[0].decode("n", as: Int.self) == 1
        )
        try await client.query("DROP TABLE \(identifier: table)")
        await client.close()
    }

    @Test func cancellingATaskStopsItsStatementOnTheServer() async throws {
        let client = try makeClient(poolSize: 1)
        let backend: PostgresQuery = "SELECT pg_backend_pid() AS pid"
        // The pool's one connection: the sleep below runs on it.
        let before: Int = try await client.query(backend)[0].decode("pid")
        let sleeper = Task { try await client.query("SELECT pg_sleep(30)") }
        let observer = try makeClient(poolSize: 1)
        func running() async throws -> Bool {
            try await !observer.query(
                "SELECT 1 FROM pg_stat_activity WHERE pid = \(before) AND state = 'active'"
            ).isEmpty
        }
        #expect(try await TestServers.waitUntil { try await running() })
        let start = ContinuousClock.now
        sleeper.cancel()
        await #expect(throws: PostgresError.self) {
            do {
                _ = try await sleeper.value
            } catch let error as PostgresError {
                #expect(error.sqlState == "57014", "canceling statement due to user request")
                throw error
            }
        }
        #expect(ContinuousClock.now - start < .seconds(10))
        #expect(try await !running())
        // The cancelled connection is replaced, not leased again; one cancelled before its
        // statement ran is kept.
        let after: Int = try await client.query(backend)[0].decode("pid")
        #expect(after != before)
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await client.query(backend)
        }
        _ = try? await early.value
        #expect(try await client.query(backend)[0].decode("pid", as: Int.self) == after)
        await observer.close()
        await client.close()
    }

    @Test func aSmallPoolServesManyConcurrentQueries() async throws {
        let client = try makeClient(poolSize: 2)
        let sums = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<40 {
                group.addTask {
                    try await client.query("SELECT \(index)::int + 1 AS n, pg_sleep(0.005)")[0].decode(
                        "n",
                        as: Int.self
                    )
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(sums == (1...40).reduce(0, +))
        await client.close()
    }

    @Test func unreachableServerIsARetriableConnectionError() async throws {
        let port = try TestServers.freePort()
        let client = PostgresClient(
            configuration: .init(url: "postgresql://postgres@127.0.0.1:\(port)/x?connect_timeout=2")
        )
        await #expect(throws: PostgresError.self) {
            do {
                try await client.ping()
            } catch let error as PostgresError {
                #expect(error.code == .connectionFailed)
                #expect(error.isRetriable)
                throw error
            }
        }
        await client.close()
    }
}

@Suite(.timeLimit(.minutes(1))) struct PostgresMigratorTests {
    @Test func migrationsApplyOnceInOrderEvenWhenStartedConcurrently() async throws {
        let client = try makeClient()
        let component = TestServers.uniqueName("component")
        let migrator = PostgresMigrator(
            component: component,
            migrations: [
                PostgresMigration(
                    version: 1,
                    name: "create",
                    sql: "CREATE TEMP TABLE IF NOT EXISTS migration_probe (id int)"
                ),
                PostgresMigration(version: 2, name: "noop", sql: "SELECT 1"),
            ]
        )
        let applied = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<3 { group.addTask { try await migrator.run(on: client, logger: Logger(label: "test")) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(applied.flatMap { $0 }.sorted() == [1, 2], "each migration applied exactly once: \(applied)")
        #expect(try await migrator.run(on: client, logger: Logger(label: "test")).isEmpty)
        let recorded = try await client.query(
            "SELECT version, name FROM schema_migrations WHERE component = \(component) ORDER BY version"
        ).map { try $0.decode("name", as: String.self) }
        #expect(recorded == ["create", "noop"])

        let failing = PostgresMigrator(
            component: component,
            migrations: migrator.migrations + [PostgresMigration(version: 3, name: "broken", sql: "SELEC nonsense")]
        )
        await #expect(throws: PostgresError.self) { try await failing.run(on: client, logger: Logger(label: "test")) }
        #expect(
            try await client.query("SELECT 1 FROM schema_migrations WHERE component = \(component) AND version = 3")
                .isEmpty
        )
        try await client.query("DELETE FROM schema_migrations WHERE component = \(component)")
        await client.close()
    }
}
