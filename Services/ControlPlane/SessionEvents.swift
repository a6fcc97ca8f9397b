import Contracts
import Foundation
import Logging
import Metrics
import Nats
import Postgres
import ServiceLifecycle

/// Publishes the session lifecycle events recorded in `session_events_outbox` to JetStream
/// (`SESSION_EVENTS`, file storage), in order, then deletes them — so every acknowledged write
/// reaches the stream exactly once from its consumers' point of view (the message id dedupes a
/// batch that is published again after a crash), even if the service dies in between.
///
/// Writers call ``nudge()`` after a write so events go out at once; the relay also looks every
/// `pollInterval` for rows left by an instance that died. With several instances, one relays at
/// a time (a transaction-scoped advisory lock), which keeps every session's events in order.
/// While NATS is unreachable the rows wait and are retried.
final class SessionEventRelay: Service, Sendable {
    static let stream = StreamConfiguration(
        name: Subjects.sessionEventsStream,
        subjects: [Subjects.allSessionEvents],
        maxAge: .seconds(7 * 24 * 3600),
        allowAtomic: true
    )

    private let database: PostgresClient
    private let jetStream: JetStream
    private let logger: Logger
    private let pollInterval: Duration
    private let batchSize: Int
    private let nudges: AsyncStream<Void>
    private let nudger: AsyncStream<Void>.Continuation

    init(
        database: PostgresClient,
        jetStream: JetStream,
        logger: Logger,
        pollInterval: Duration = .milliseconds(250),
        batchSize: Int = 200
    ) {
        self.database = database
        self.jetStream = jetStream
        self.logger = logger
        self.pollInterval = pollInterval
        self.batchSize = batchSize
        (nudges, nudger) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Creates the stream when missing.
    func prepare() async throws {
        try await jetStream.createOrUpdateStream(Self.stream)
    }

    /// Tells the relay that events are waiting.
    func nudge() {
        nudger.yield()
    }

    /// After an update or a close: relays its event, and tells every cache of the session at
    /// once (core NATS, ahead of the durable event) to forget it under its old and new names.
    /// Returns once NATS has the notice (up to a second), so that the caller's next request,
    /// after the answer, most likely finds the caches told already.
    func changed(_ session: SessionRecord, previousExternalId: String? = nil) async {
        nudge()
        let names = Array(Set([session.friendlyId, session.externalId, previousExternalId].compactMap { $0 }))
        let change = SessionChange(environmentId: session.environmentId, names: names.sorted())
        do {
            try jetStream.connection.publish(
                Subjects.sessionChange(environmentId: session.environmentId),
                payload: try JSONEncoder.sessions.encode(change)
            )
            try await jetStream.connection.flush(timeout: .seconds(1))
        } catch {
            // The durable event still invalidates them, a little later.
            logger.warning("Could not announce a session change.", metadata: ["error": "\(error)"])
        }
    }

    func run() async throws {
        await withDiscardingTaskGroup { group in
            // A ticker turns the poll interval into nudges, so one loop handles both.
            group.addTask { [nudger, pollInterval] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: pollInterval)
                    nudger.yield()
                }
            }
            var failures = 0
            for await _ in nudges.cancelOnGracefulShutdown() {
                do {
                    while try await relayBatch() == batchSize {}
                    failures = 0
                } catch {
                    failures += 1
                    logger.warning(
                        "Could not relay session events; they stay in the outbox.",
                        metadata: ["error": "\(error)", "attempt": "\(failures)"]
                    )
                    try? await Task.sleep(for: .milliseconds(min(100 * (1 << min(failures, 5)), 3000)))
                }
            }
            group.cancelAll()
        }
        // Whatever was committed before the shutdown still goes out.
        _ = try? await relayBatch()
    }

    /// Publishes up to `batchSize` waiting events and deletes those published; returns how many
    /// rows it handled (0 also when another instance is relaying right now).
    ///
    /// The events go out as one atomic JetStream batch, in outbox order: one acknowledgement for
    /// all, which halves what NATS spends per event. JetStream refuses a whole batch that holds a
    /// message id it has seen (a relay that died between publishing and deleting); that batch,
    /// and any other it refuses, goes out one event at a time (``publishSeparately(_:)``), where
    /// duplicates are dropped and one session's trouble holds back only that session. While
    /// NATS is unreachable or does not answer, the rows stay for the next attempt.
    /// A row that cannot be read as an event at all is moved to `session_events_failed`, with
    /// the reason, and logged.
    @discardableResult
    func relayBatch() async throws -> Int {
        let (published, setAside, failure) = try await database.withTransaction {
            connection -> (Int, Int, (any Error)?) in
            let lock = try await connection.query("SELECT pg_try_advisory_xact_lock(7305002) AS locked")
            guard try lock[0].decode("locked", as: Bool.self) else { return (0, 0, nil) }
            let rows = try await connection.query(
                """
                SELECT id, kind, session_row::text AS session_row, previous_external_id,
                    extract(epoch FROM now() - created_at)::float8 AS age
                FROM session_events_outbox ORDER BY id LIMIT \(batchSize)
                """
            )
            ControlPlaneMetrics.outboxAge.record(
                try rows.first.map { max(0, try $0.decode("age", as: Double.self)) } ?? 0
            )
            var messages: [OutboxMessage] = []
            var setAside = 0
            for row in rows {
                let id: Int64 = try row.decode("id")
                do {
                    messages.append(try OutboxMessage(row))
                } catch {
                    try await self.setAside(id, error: error, on: connection)
                    setAside += 1
                }
            }
            let (published, failure) = await publish(messages)
            if !published.isEmpty {
                try await connection.query(
                    "DELETE FROM session_events_outbox WHERE id = ANY(\(published.map(String.init))::bigint[])"
                )
            }
            return (published.count, setAside, failure)
        }
        // Counted once committed: a batch rolled back is relayed again.
        ControlPlaneMetrics.eventsRelayed.increment(by: published)
        ControlPlaneMetrics.eventsSetAside.increment(by: setAside)
        if let failure { throw failure }
        return published + setAside
    }

    /// Publishes `messages` (in outbox order); returns the rows published and the first failure.
    private func publish(_ messages: [OutboxMessage]) async -> (published: [Int64], failure: (any Error)?) {
        guard !messages.isEmpty else { return ([], nil) }
        do {
            _ = try await jetStream.publishBatch(
                messages.map {
                    JetStream.BatchMessage(subject: $0.subject, payload: $0.payload, headers: ["Nats-Msg-Id": $0.id])
                }
            )
            return (messages.map(\.row), nil)
        } catch let error as NatsError where error.isRetriable {
            // NATS is away or slow: one by one would only wait longer. The rows stay.
            return ([], error)
        } catch {
            logger.notice(
                "An event batch was refused; publishing its events one by one.",
                metadata: ["error": "\(error)"]
            )
            return await publishSeparately(messages)
        }
    }

    /// Publishes each event on its own: one session's events one after another, different
    /// sessions concurrently. A session whose event fails keeps it and its later ones for the
    /// next attempt, so one session's trouble neither holds back nor repeats the rest.
    private func publishSeparately(_ messages: [OutboxMessage]) async -> (published: [Int64], failure: (any Error)?) {
        let bySession = Dictionary(grouping: messages, by: \.sessionId)
        let outcomes = await withTaskGroup(of: (published: [Int64], failure: (any Error)?).self) { group in
            for messages in bySession.values {
                group.addTask { [jetStream] in
                    var published: [Int64] = []
                    for message in messages {
                        do {
                            _ = try await jetStream.publish(
                                message.subject,
                                payload: message.payload,
                                messageID: message.id
                            )
                            published.append(message.row)
                        } catch {
                            return (published, error)
                        }
                    }
                    return (published, nil)
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        return (outcomes.flatMap(\.published), outcomes.lazy.compactMap(\.failure).first)
    }

    /// Moves an outbox row that cannot become an event to `session_events_failed`.
    private func setAside(_ id: Int64, error: any Error, on connection: PostgresConnection) async throws {
        // Coding errors quote the value; the row itself is kept whole.
        let reason = String(String(describing: error).prefix(500))
        logger.error(
            "A session event could not be read; it was moved to session_events_failed.",
            metadata: ["outbox.id": "\(id)", "error": "\(reason)"]
        )
        try await connection.query(
            """
            WITH moved AS (DELETE FROM session_events_outbox WHERE id = \(id) RETURNING *)
            INSERT INTO session_events_failed (id, kind, session_row, previous_external_id, error, created_at)
            SELECT id, kind, session_row, previous_external_id, \(reason), created_at FROM moved
            """
        )
    }
}

/// One outbox row as the JetStream message it becomes.
private struct OutboxMessage: Sendable {
    /// The outbox row's id.
    var row: Int64
    var sessionId: String
    var subject: String
    var payload: Data
    /// Unique beyond this database (outbox ids restart with a new one), so JetStream dedupes a
    /// row published again after a crash.
    var id: String

    init(_ row: PostgresRow) throws {
        self.row = try row.decode("id")
        let session = try SessionRow.decode(row)
        sessionId = session.id
        let kind = SessionEvent.Kind(rawValue: try row.decode("kind")) ?? .updated
        let event = SessionEvent(
            kind: kind,
            session: session,
            previousExternalId: try row.decode("previous_external_id", as: String?.self)
        )
        subject = Subjects.sessionEvent(environmentId: session.environmentId, kind: kind)
        payload = try JSONEncoder.sessions.encode(event)
        id = "\(session.id):\(kind.rawValue):\(self.row)"
    }
}
