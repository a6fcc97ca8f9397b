import ClickHouse
import Foundation
import Logging
import Metrics
import Postgres
import Redis
import ServiceLifecycle
import Synchronization

/// PostgreSQL `sessions` → ClickHouse `sessions_v1` over logical replication.
///
/// One leader per slot (``LeaderLock``); standbys keep trying and take over within a few seconds
/// of the leader's death. The leader decodes pgoutput, assembles transactions (version = commit
/// end LSN), batches rows (deduplicated per session, highest version wins) by size and interval,
/// and flushes with bounded concurrency and retries. The slot is acknowledged only up to the last
/// transaction whose batch — and every batch before it — ClickHouse accepted: at-least-once,
/// made idempotent by `_version`.
final class SessionReplicator: Service, Sendable {
    struct Settings: Sendable {
        var databaseURL: String
        var slot: String
        var publication: String
        var batchSize: Int
        var flushInterval: Duration
        var maxConcurrentFlushes: Int
        var lockTTL: Duration
    }

    let settings: Settings
    let database: PostgresClient
    let redis: RedisClient
    let clickhouse: ClickHouseClient
    let logger: Logger
    /// Whether this instance leads now (for tests and readiness of operators).
    let isLeader = Atomic<Bool>(false)

    init(settings: Settings, database: PostgresClient, redis: RedisClient, clickhouse: ClickHouseClient, logger: Logger)
    {
        self.settings = settings
        self.database = database
        self.redis = redis
        self.clickhouse = clickhouse
        self.logger = logger
    }

    /// Runs until graceful shutdown; the leader then flushes, acknowledges and releases the lock.
    func run() async throws {
        await waitForSessionsTable()
        var backoff = Duration.milliseconds(500)
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let lock = LeaderLock(redis: redis, slot: settings.slot, ttl: settings.lockTTL)
            let started = ContinuousClock.now
            do {
                guard try await lock.acquire() else {
                    await pause(.seconds(1))  // standby
                    continue
                }
                isLeader.store(true, ordering: .relaxed)
                ReplicatorMetrics.leader.record(1)
                logger.notice("Leading replication.", metadata: ["pg.slot": "\(settings.slot)"])
                try await lead(lock)
                backoff = .milliseconds(500)
            } catch  where !Task.isCancelled && !Task.isShuttingDownGracefully {
                // (Shutdown stopping the preparation — a slot creation waits for every open
                // transaction — is no failure: the lock is released below.)
                // A failure after a good while of replicating is a new trouble, not the last one
                // again: it waits the shortest time, not what earlier failures had built up.
                if ContinuousClock.now - started > .seconds(60) { backoff = .milliseconds(500) }
                ReplicatorMetrics.restarts.increment()
                logger.error(
                    "Replication stopped; starting again from the slot.",
                    metadata: ["pg.slot": "\(settings.slot)", "error": "\(error)"]
                )
                await pause(backoff)
                backoff = min(backoff * 2, .seconds(30))
            } catch {}
            if isLeader.exchange(false, ordering: .relaxed) {
                ReplicatorMetrics.leader.record(0)
                // The lag is the leader's to tell: a stale one here would look like a lag for ever.
                ReplicatorMetrics.lag.record(0)
                await lock.release()
            }
        }
    }

    /// Sleeps, or less when graceful shutdown comes first.
    private func pause(_ duration: Duration) async {
        try? await cancelWhenGracefulShutdown { try await Task.sleep(for: duration) }
    }

    /// Leads until cancelled, the lock is lost, or replication fails. The lock is renewed from
    /// the start: preparing a new slot copies every existing row, which can outlast the TTL.
    private func lead(_ lock: LeaderLock) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: self.settings.lockTTL / 3)
                    guard try await lock.renew() else { throw ReplicatorError.lostLeadership }
                }
            }
            group.addTask {
                // Nothing is read yet, so shutdown may stop this part at once; consuming instead
                // ends at its next turn, after flushing.
                let stream = try await cancelWhenGracefulShutdown {
                    try await self.prepare()
                    return try await PostgresReplicationStream.start(
                        url: self.settings.databaseURL,
                        slot: self.settings.slot,
                        publication: self.settings.publication
                    )
                }
                defer { Task { await stream.close() } }
                try await self.consume(stream)
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Returns once `sessions` exists: the control plane creates it when it first starts, and
    /// nothing is wrong meanwhile, so the wait is said once.
    private func waitForSessionsTable() async {
        var toldWaiting = false
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let rows = try await database.query("SELECT to_regclass('public.sessions') IS NOT NULL AS present")
                if try rows.first?.decode("present", as: Bool.self) == true { return }
                if !toldWaiting {
                    logger.notice("Waiting for the control plane to create the sessions table.")
                    toldWaiting = true
                }
            } catch {
                logger.warning("Could not look for the sessions table; retrying.", metadata: ["error": "\(error)"])
            }
            await pause(.seconds(1))
        }
    }

    /// Creates the ClickHouse table, the publication (or checks it) and the slot when missing.
    func prepare() async throws {
        try await clickhouse.execute(SessionsTable.ddl)
        let publication = try await database.query(
            "SELECT pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = \(settings.publication)"
        )
        if let row = publication.first {
            let publishes =
                try row.decode("pubinsert", as: Bool.self) && row.decode("pubupdate", as: Bool.self)
                && row.decode("pubdelete", as: Bool.self)
            let hasTable = try await !database.query(
                """
                SELECT 1 FROM pg_publication_tables
                WHERE pubname = \(settings.publication) AND schemaname = 'public' AND tablename = 'sessions'
                """
            ).isEmpty
            guard publishes && hasTable else {
                throw ReplicatorError.badPublication(
                    "publication \(settings.publication) must cover public.sessions with insert, update and delete: "
                        + "ALTER PUBLICATION \(settings.publication) ADD TABLE sessions; "
                        + "ALTER PUBLICATION \(settings.publication) SET (publish = 'insert, update, delete')"
                )
            }
        } else {
            try await database.query(
                """
                CREATE PUBLICATION \(identifier: settings.publication) FOR TABLE sessions
                WITH (publish = 'insert, update, delete')
                """
            )
        }
        // A new slot streams changes from its creation on: the rows already there are copied,
        // at the slot's position as version (every later change has a higher one). The Redis
        // marker makes a copy that a crash cut short run again.
        let backfillKey = "replicator:backfill:\(settings.slot)"
        if try await database.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = \(settings.slot)").isEmpty {
            _ = try await redis.command("SET", backfillKey, "pending")
            logger.notice(
                "Creating the replication slot; it waits for the transactions open now to end.",
                metadata: ["pg.slot": "\(settings.slot)"]
            )
            try await database.query("SELECT pg_create_logical_replication_slot(\(settings.slot), 'pgoutput')")
        }
        if try await redis.command("EXISTS", backfillKey).integer == 1 {
            try await backfill()
            _ = try await redis.command("DEL", backfillKey)
        }
    }

    /// Copies every `sessions` row to ClickHouse with the slot's confirmed position as version.
    private func backfill() async throws {
        guard
            let text = try await database.query(
                "SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = \(settings.slot)"
            ).first?.decode("lsn", as: String.self),
            let version = LSN(text)
        else { throw ReplicatorError.badPublication("slot \(settings.slot) has no confirmed position") }
        var after = ""
        var copied = 0
        while true {
            try Task.checkCancellation()  // the lock was lost
            let rows = try await database.query(
                """
                SELECT id, friendly_id, external_id, type, task_identifier, tags, metadata, organization_id, project_id,
                    runtime_environment_id, environment_type, closed_at, closed_reason, expires_at, created_at, updated_at
                FROM sessions WHERE id > \(after) ORDER BY id LIMIT \(settings.batchSize)
                """
            )
            guard let last = rows.last else { break }
            let columns = [
                "id", "friendly_id", "external_id", "type", "task_identifier", "tags", "metadata", "organization_id",
                "project_id", "runtime_environment_id", "environment_type", "closed_at", "closed_reason", "expires_at",
                "created_at", "updated_at",
            ]
            try await insert(
                rows.map { row in
                    try SessionsTable.row(
                        Dictionary(uniqueKeysWithValues: columns.map { ($0, row[$0]) }),
                        version: version,
                        deleted: false
                    )
                }
            )
            copied += rows.count
            after = try last.decode("id", as: String.self)
        }
        logger.notice(
            "Copied the existing sessions to ClickHouse.",
            metadata: ["rows": "\(copied)", "pg.lsn": "\(version)"]
        )
    }

    // MARK: Consuming

    private func consume(_ stream: PostgresReplicationStream) async throws {
        var relations: [UInt32: PgOutputRelation] = [:]
        var transaction: [SessionsTable.Row] = []
        /// Between a transaction's begin and its commit (it may have no rows of ours yet).
        var inTransaction = false
        var batch = Batch()
        var flushes = Flushes()
        // Consuming stopped with an error (the stream broke, leadership was lost): its inserts
        // must not go on retrying beside the next round's.
        defer { flushes.cancelAll() }
        var latestCommit = LSN.zero
        var acknowledged = LSN.zero
        var lastStatus = ContinuousClock.now
        func acknowledge(_ lsn: LSN, force: Bool = false) async throws {
            guard force || lsn > acknowledged || ContinuousClock.now - lastStatus > .seconds(10) else { return }
            try await stream.sendStatus(flushed: lsn)
            acknowledged = max(acknowledged, lsn)
            lastStatus = ContinuousClock.now
        }
        // The oldest commit not yet in ClickHouse: a lag that grows while inserts fail.
        func recordLag() {
            let oldest = flushes.firstCommit ?? batch.firstCommit
            ReplicatorMetrics.lag.record(oldest.map { max(0, Date().timeIntervalSince($0)) } ?? 0)
        }
        func flush() async throws {
            guard !batch.rows.isEmpty else { return }
            while flushes.count >= settings.maxConcurrentFlushes {
                try await Task.sleep(for: .milliseconds(20))
                recordLag()
                if let lsn = try flushes.completed() { try await acknowledge(lsn) }
            }
            flushes.start(batch, insert: insert)
            batch = Batch()
        }
        /// Takes one message into the open transaction, the batch, or the acknowledged position.
        func handle(_ message: ReplicationMessage) async throws {
            switch message {
            case .data(_, _, let payload):
                switch try PgOutputMessage(decoding: payload) {
                case .begin:
                    transaction = []
                    inTransaction = true
                case .relation(let relation): relations[relation.id] = relation
                case .insert(let id, let new):
                    transaction.append(try row(relations[id], new: new, old: nil, deleted: false))
                    ReplicatorMetrics.events(.insert).increment()
                case .update(let id, let old, let new):
                    transaction.append(try row(relations[id], new: new, old: old, deleted: false))
                    ReplicatorMetrics.events(.update).increment()
                case .delete(let id, let old):
                    transaction.append(try row(relations[id], new: old, old: nil, deleted: true))
                    ReplicatorMetrics.events(.delete).increment()
                case .commit(_, let end, let time):
                    for var row in transaction {
                        row.version = end.rawValue
                        row.values[16] = .number(end.rawValue)
                        batch.add(row)
                    }
                    batch.lastLSN = end
                    if batch.firstCommit == nil && !batch.rows.isEmpty { batch.firstCommit = time }
                    latestCommit = end
                    transaction = []
                    inTransaction = false
                case .other: break
                }
            case .keepalive(let walEnd, let replyRequested):
                // With nothing buffered, in flight or half-read, every change up to the server's
                // position is in ClickHouse: confirm it, or the slot would hold the WAL of other
                // tables and a PostgreSQL shutdown would wait for this confirmation for ever.
                // Otherwise only what ClickHouse has is confirmed: the last commit read may still
                // be buffered, and a crash would lose it.
                if batch.rows.isEmpty && flushes.count == 0 && !inTransaction {
                    latestCommit = max(latestCommit, walEnd)
                    try await acknowledge(latestCommit, force: replyRequested)
                } else if replyRequested {
                    try await acknowledge(acknowledged, force: true)
                }
            }
        }
        // Graceful shutdown ends the loop without cancelling, so the last flush still runs.
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let messages: [ReplicationMessage]
            do {
                messages = try await stream.next(timeout: min(settings.flushInterval, .milliseconds(200)))
            } catch {
                if Task.isCancelled { break }
                throw error
            }
            for message in messages {
                try await handle(message)
                if batch.rows.count >= settings.batchSize { try await flush() }
            }
            if !batch.rows.isEmpty && batch.age >= settings.flushInterval {
                try await flush()
            }
            if let lsn = try flushes.completed() { try await acknowledge(lsn) }
            recordLag()
            // Nothing buffered or in flight: everything read so far is in ClickHouse.
            if batch.rows.isEmpty && flushes.count == 0 && !inTransaction { try await acknowledge(latestCommit) }
        }
        // Graceful shutdown: flush what is buffered, wait for every flush, acknowledge.
        try await flush()
        try await flushes.waitAll()
        try await acknowledge(max(latestCommit, acknowledged), force: true)
        logger.notice("Replication flushed and acknowledged.", metadata: ["pg.lsn": "\(acknowledged)"])
    }

    private func row(
        _ relation: PgOutputRelation?,
        new: [PgOutputValue],
        old: [PgOutputValue]?,
        deleted: Bool
    ) throws
        -> SessionsTable.Row
    {
        guard let relation else { throw PgOutputError(description: "a row before its relation") }
        var columns: [String: String?] = [:]
        for (index, name) in relation.columns.enumerated() where index < new.count {
            switch new[index] {
            case .null: columns[name] = .some(nil)
            case .text(let text): columns[name] = text
            case .unchanged:
                if let old, index < old.count, case .text(let text) = old[index] { columns[name] = text }
            }
        }
        return try SessionsTable.row(columns, version: .zero, deleted: deleted)
    }

    /// Inserts one batch, retrying what may succeed later with exponential backoff and jitter.
    @Sendable private func insert(_ rows: [SessionsTable.Row]) async throws {
        let body = SessionsTable.body(rows)
        var delay = Duration.milliseconds(100)
        let started = ContinuousClock.now
        while true {
            do {
                try await clickhouse.execute(
                    "INSERT INTO \(SessionsTable.name) FORMAT JSONCompactEachRowWithNames",
                    settings: ["date_time_input_format": "best_effort"],
                    data: body
                )
                ReplicatorMetrics.batches(success: true).increment()
                ReplicatorMetrics.batchSize.record(rows.count)
                ReplicatorMetrics.rows.increment(by: rows.count)
                ReplicatorMetrics.flushDuration.record(duration: ContinuousClock.now - started)
                return
            } catch let error as ClickHouseError where !error.isRetriable {
                ReplicatorMetrics.batches(success: false).increment()
                throw error
            } catch {
                ReplicatorMetrics.retries.increment()
                logger.warning("A ClickHouse insert failed; retrying.", metadata: ["error": "\(error)"])
                let jitter = Double.random(in: 0.5...1.5)
                try await Task.sleep(for: delay * jitter)
                delay = min(delay * 2, .seconds(10))
            }
        }
    }
}

enum ReplicatorError: Error, CustomStringConvertible {
    case lostLeadership
    case badPublication(String)

    var description: String {
        switch self {
        case .lostLeadership: "another replicator holds the leader lock"
        case .badPublication(let message): message
        }
    }
}

/// Rows waiting to be flushed, one per session (the highest version wins).
struct Batch {
    var rows: [String: SessionsTable.Row] = [:]
    var lastLSN = LSN.zero
    /// When the first of its transactions committed.
    var firstCommit: Date?
    let created = ContinuousClock.now

    var age: Duration { ContinuousClock.now - created }

    mutating func add(_ row: SessionsTable.Row) {
        if let existing = rows[row.sessionId], existing.version > row.version { return }
        rows[row.sessionId] = row
    }
}

/// Batches being inserted, in the order they were cut. The acknowledgeable LSN is the last LSN
/// of the longest prefix of finished batches.
struct Flushes {
    private final class Flight: Sendable {
        let lsn: LSN
        let firstCommit: Date?
        let result = Mutex<Result<Void, any Error>?>(nil)

        init(lsn: LSN, firstCommit: Date?) {
            self.lsn = lsn
            self.firstCommit = firstCommit
        }
    }

    private var flights: [(flight: Flight, task: Task<Void, Never>)] = []

    var count: Int { flights.count }
    /// When the first transaction of the oldest batch still being inserted committed.
    var firstCommit: Date? { flights.first?.flight.firstCommit }

    mutating func start(_ batch: Batch, insert: @escaping @Sendable ([SessionsTable.Row]) async throws -> Void) {
        let flight = Flight(lsn: batch.lastLSN, firstCommit: batch.firstCommit)
        let rows = Array(batch.rows.values)
        let task = Task {
            do {
                try await insert(rows)
                flight.result.withLock { $0 = .success(()) }
            } catch {
                flight.result.withLock { $0 = .failure(error) }
            }
        }
        flights.append((flight, task))
    }

    /// Drops the finished prefix; returns its last LSN, or nil when the first is still running.
    /// Throws the error of a batch that failed for good.
    mutating func completed() throws -> LSN? {
        var lsn: LSN?
        while let first = flights.first, let result = first.flight.result.withLock({ $0 }) {
            try result.get()
            flights.removeFirst()
            lsn = first.flight.lsn
        }
        return lsn
    }

    mutating func waitAll() async throws {
        for (_, task) in flights { await task.value }
        _ = try completed()
    }

    /// Stops the inserts still running (each retries until ClickHouse takes it). Their rows were
    /// not acknowledged, so replication sends them again from the slot.
    func cancelAll() {
        for (_, task) in flights { task.cancel() }
    }
}
