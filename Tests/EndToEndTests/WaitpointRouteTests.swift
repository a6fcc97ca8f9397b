import Contracts
import Foundation
import HTTPClient
import Hummingbird
import Logging
import Nats
import Postgres
import Redis
import ServiceKit
import TestSupport
import Testing

@testable import Waitpoints

@Suite struct WaitpointRouteTests {
    @Test(.timeLimit(.minutes(1))) func aNatsReconnectMakesEveryParkedLongPollLookAgain() async throws {
        let server = try OwnNatsServer()
        try server.start()
        let connection = try await NatsConnection.connect(
            .init(url: server.url, name: "signals", reconnectWait: .milliseconds(100), requestTimeout: .seconds(1))
        )
        #expect(try await TestServers.waitUntil { connection.isConnected }, "never connected")
        let signals = SettledSignals(connection: connection)
        let running = Task { try await signals.run() }
        var parked = signals.listen("waitpoint_parked").makeAsyncIterator()
        try await connection.flush()
        // Signals sent while the server is away are lost: the reconnect says "look again".
        try await server.stop()
        #expect(try await TestServers.waitUntil { !connection.isConnected }, "never noticed the server was gone")
        try server.start()
        #expect(try await TestServers.waitUntil { connection.isConnected }, "never reconnected")
        let signal = await parked.next()
        #expect(signal == .some(nil), "woken to look again, with no waitpoint: \(String(describing: signal))")
        running.cancel()
        await connection.close()
        try await server.stop()
    }

    /// An instance wakes its own long-polls directly; those parked on another instance hear of
    /// the settlement through NATS.
    @Test(.timeLimit(.minutes(1))) func aSettlementAnnouncedByAnotherInstanceWakesTheLongPoll() async throws {
        let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "signals"))
        let other = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "other instance"))
        let signals = SettledSignals(connection: connection)
        let running = Task { try await signals.run() }
        let item = Self.completed("waitpoint_\(UUID().uuidString)", in: "env", output: "elsewhere")
        var parked = signals.listen(item.id).makeAsyncIterator()
        // Until the subscription is in place a signal is lost, so the other instance repeats it.
        let announcing = Task {
            while !Task.isCancelled {
                try other.publish(Subjects.waitpointsSettled, payload: try JSONEncoder.sessions.encode([item]))
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        let signal = await parked.next()
        // Dates travel with millisecond precision; the id and the output are what a poll answers.
        #expect(signal??.id == item.id && signal??.output == item.output, "\(String(describing: signal))")
        announcing.cancel()
        running.cancel()
        await other.close()
        await connection.close()
    }

    /// A waitpoint's value is the record's data as written, not decoded and encoded again.
    @Test func theValueIsTheDataAsWritten() {
        func data(_ body: String) -> String {
            WaitpointEngine.data(of: ChannelRecord(seqNum: 0, timestamp: 0, body: body))
        }
        let object = #"{ "b" : 9007199254740993, "a": [1, "}", {"c": "\"]"}], "z": 1.2345678901234567890123e22 }"#
        #expect(data(#"{"id":"p1","data":\#(object)}"#) == object)
        #expect(data(#"{"data":[true,null, -0.5e-3 ] , "id":"x"}"#) == "[true,null, -0.5e-3 ]")
        #expect(data(#"{"data":12345678901234567890123}"#) == "12345678901234567890123")
        #expect(data(#"{"data":"text \"quoted\""}"#) == #"text "quoted""#)
        #expect(data(#"{"d\u0061ta":{"k":1}}"#) == #"{"k":1}"#, "a name written with an escape")
        #expect(data(#"{"data":1,"data":{"last":true}}"#) == #"{"last":true}"#)
        #expect(data("plain text") == "plain text")
        #expect(data(#"{"id":"no data"}"#) == #"{"id":"no data"}"#)
    }

    /// The sweeper's read of unpublished waitpoints may be from before the publisher marked one:
    /// handing it over again then must not publish its event a second time.
    @Test(.timeLimit(.minutes(1))) func aWaitpointIsPublishedOnceThoughTheSweeperHandsItOverLate() async throws {
        _ = try await ServicesFixture.shared.value  // WAITPOINT_EVENTS and the waitpoints table
        let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "publisher"))
        let database = PostgresClient(configuration: .init(url: try TestServers.databaseURL, poolSize: 1))
        let jetStream = try JetStream(connection: connection)
        let publisher = EventPublisher(
            jetStream: jetStream,
            store: WaitpointStore(database: database),
            logger: Logger(label: "publisher")
        )
        let running = Task { try await publisher.run() }
        let environment = TestServers.uniqueName("env")
        func waitpoint(_ name: String) -> Waitpoint {
            Waitpoint(
                item: Self.completed(TestServers.uniqueName(name), in: environment, output: name),
                channel: ChannelAddress(environmentId: environment, friendlyId: "session_1", io: .in),
                fromSeqNum: 0
            )
        }
        let settled = waitpoint("settled")
        publisher.enqueue([settled], .completed)
        // Handed over again and again while it is published, marked and released, each time
        // with another waitpoint (alone, its message id would be the same, and JetStream would
        // drop the copy).
        for _ in 0..<25 {
            publisher.enqueue([settled, waitpoint("other")], .completed)
            try await Task.sleep(for: .milliseconds(20))
        }
        let last = waitpoint("last")
        publisher.enqueue([last], .completed)
        let events = try jetStream.orderedConsumer(
            stream: Subjects.waitpointEventsStream,
            subject: Subjects.waitpointEvent(environmentId: environment, kind: .completed)
        )
        var published: [String] = []
        for await message in events {
            published += try JSONDecoder.sessions.decode(WaitpointEvent.self, from: message.payload).waitpoints.map(
                \.id
            )
            if published.contains(last.id), message.metadata?.pending == 0 { break }
        }
        events.unsubscribe()
        #expect(published.filter { $0 == settled.id }.count == 1, "\(published)")
        running.cancel()
        await connection.close()
        await database.close()
    }

    @Test func theOpenAPIDocumentDescribesEveryWaitpointRoute() async throws {
        let stack = try await ServicesFixture.shared.value
        let response = try await stack.get(stack.controlPlane.baseURL + "/api/openapi.json")
        let documented = try RouteDocument.documented(response.body, prefixes: ["/api/v1/runs/", "/api/v1/waitpoints"])
        let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "routes"))
        let database = PostgresClient(configuration: .init(url: try TestServers.databaseURL, poolSize: 1))
        let redis = try RedisClient(configuration: .init(url: try TestServers.redisURL))
        let engine = try Self.engine(connection: connection, database: database, redis: redis)
        let router = Router(context: APIRequestContext.self)
        WaitpointRoutes(engine: engine).add(
            to: router,
            authenticator: NatsAuthenticator(connection: connection)
        )
        let routed = RouteDocument.routed(router)
        await connection.close()
        await database.close()
        await redis.close()
        #expect(
            documented == routed,
            "only documented: \(documented.subtracting(routed)); only routed: \(routed.subtracting(documented))"
        )
    }

    /// A waitpoint of session_1's `.in`, completed now with `output`.
    static func completed(_ id: String, in environmentId: String, output: String) -> WaitpointItem {
        WaitpointItem(
            id: id,
            status: .completed,
            runId: "run_1",
            session: "session_1",
            io: .in,
            output: WaitpointOutput(value: output),
            timeoutAt: nil,
            idempotencyKey: nil,
            idempotencyKeyExpiresAt: nil,
            tags: [],
            createdAt: Date(),
            completedAt: Date(),
            environmentId: environmentId
        )
    }

    /// A waitpoint engine on these connections; nothing of it runs in the background.
    static func engine(
        connection: NatsConnection,
        database: PostgresClient,
        redis: RedisClient
    ) throws -> WaitpointEngine {
        let store = WaitpointStore(database: database)
        let jetStream = try JetStream(connection: connection)
        return WaitpointEngine(
            store: store,
            registry: WaitRegistry(redis: redis),
            connection: connection,
            jetStream: jetStream,
            events: EventPublisher(jetStream: jetStream, store: store, logger: Logger(label: "engine")),
            settled: SettledSignals(connection: connection),
            logger: Logger(label: "engine")
        )
    }

    /// An engine over a database of its own and Redis database 7, and a principal of
    /// `environmentId`, for tests that drive the engine directly.
    static func isolatedEngine(
        connection: NatsConnection,
        environmentId: String
    ) async throws -> (WaitpointEngine, Principal, PostgresClient, RedisClient) {
        let database = PostgresClient(
            configuration: .init(url: try WaitpointRecoveryTests.freshDatabase().url, poolSize: 1)
        )
        try await WaitpointsSchema.migrator.run(on: database, logger: Logger(label: "test"))
        let redis = try RedisClient(configuration: .init(url: try TestServers.redisURL + "/7"))
        let principal = Principal(
            environmentId: environmentId,
            organizationId: "org",
            projectId: "project",
            environmentType: .development,
            scopes: nil
        )
        return (try engine(connection: connection, database: database, redis: redis), principal, database, redis)
    }

    /// A realtime instance killed while it holds a `channels.read` never answers it: the read is
    /// asked again, and the next request reaches one that lives.
    @Test(.timeLimit(.minutes(1))) func aChannelReadLeftUnansweredIsAskedAgain() async throws {
        let server = try OwnNatsServer()
        try server.start()
        let connection = try await NatsConnection.connect(.init(url: server.url, name: "reader"))
        let realtime = try await NatsConnection.connect(.init(url: server.url, name: "realtime"))
        let requests = try realtime.subscribe(Subjects.readChannel)
        try await realtime.flush()
        let answering = Task {
            var count = 0
            for await message in requests {
                count += 1
                guard count > 1, let reply = message.replySubject else { continue }  // the first dies with it
                try realtime.publish(
                    reply,
                    payload: try JSONEncoder.sessions.encode(ReadChannelResponse(records: [], nextSeqNum: 7))
                )
            }
        }
        let database = PostgresClient(configuration: .init(url: try TestServers.databaseURL, poolSize: 1))
        let redis = try RedisClient(configuration: .init(url: try TestServers.redisURL))
        let engine = try Self.engine(connection: connection, database: database, redis: redis)
        let channel = ChannelAddress(environmentId: "env", friendlyId: "session_1", io: .in)
        #expect(try await engine.readChannel(channel, from: .max, limit: 1).nextSeqNum == 7)
        answering.cancel()
        await connection.close()
        await realtime.close()
        await database.close()
        await redis.close()
        try await server.stop()
    }

    /// The record a new waiter asks for may be on its channel already, and then no append will
    /// come for it: when the check cannot read the channel, the sweeper must check again.
    @Test(.timeLimit(.minutes(1))) func aWaiterWhoseCheckFailedIsLeftToTheSweeper() async throws {
        // Realtime answers `channels.read` on the test NATS; on a server of our own nothing does.
        let server = try OwnNatsServer()
        try server.start()
        let connection = try await NatsConnection.connect(
            .init(url: server.url, name: "race check", requestTimeout: .seconds(1))
        )
        let (engine, principal, database, redis) = try await Self.isolatedEngine(
            connection: connection,
            environmentId: TestServers.uniqueName("env")
        )
        let (waitpoint, _) = try await engine.store.create(
            NewWaitpoint(
                principal: principal,
                runId: "run_1",
                channel: ChannelAddress(environmentId: principal.environmentId, friendlyId: "session_1", io: .in),
                fromSeqNum: 0,
                tags: []
            )
        )
        try await engine.register(waitpoint)
        #expect(try await engine.store.unregistered(after: nil, limit: 10).map(\.id) == [waitpoint.id])
        await connection.close()
        await database.close()
        await redis.close()
        try await server.stop()
    }

    /// A lastSeqNum taken unchecked while realtime was away may be past the channel's end: the
    /// sweeper's check moves the waiter to the channel's next record, as the route would have,
    /// and that record completes it.
    @Test(.timeLimit(.minutes(1))) func aWaiterPastTheEndIsMovedToTheEndWhenChecked() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        for body in ["a", "b"] { _ = try await stack.appended(session.id, body, io: "in") }
        let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "sweeper"))
        let (engine, principal, database, redis) = try await Self.isolatedEngine(
            connection: connection,
            environmentId: stack.environmentId
        )
        let channel = ChannelAddress(environmentId: stack.environmentId, friendlyId: session.id, io: .in)
        let (waitpoint, _) = try await engine.store.create(
            NewWaitpoint(principal: principal, runId: "run_1", channel: channel, fromSeqNum: 101, tags: [])
        )
        try await engine.completeFromChannel(waitpoint)
        let moved = try #require(try await engine.store.find(waitpoint.id, environmentId: stack.environmentId))
        #expect(moved.isPending && moved.fromSeqNum == 2, "waits for the channel's next record")
        #expect(try await redis.command("ZSCORE", WaitRegistry.key(channel), waitpoint.id).string == "2")
        _ = try await stack.appended(session.id, "next", io: "in")
        try await engine.completeFromChannel(moved)
        let done = try #require(try await engine.store.find(waitpoint.id, environmentId: stack.environmentId))
        #expect(done.item.output == WaitpointOutput(value: "next", seqNum: 2))
        await connection.close()
        await database.close()
        await redis.close()
    }

    /// The sweeper enqueues every waitpoint still unmarked after 5 s, also those already queued:
    /// a second copy must not go out (in another batch it would get another message id).
    @Test(.timeLimit(.minutes(1))) func aWaitpointQueuedTwiceIsPublishedOnce() async throws {
        let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "events"))
        let database = PostgresClient(configuration: .init(url: try TestServers.databaseURL, poolSize: 1))
        let jetStream = try JetStream(connection: connection)
        // The waitpoints service makes the stream when it starts; this test may run before it.
        _ = try await jetStream.createOrUpdateStream(WaitpointEngine.eventStreamConfiguration())
        let publisher = EventPublisher(
            jetStream: jetStream,
            store: WaitpointStore(database: database),
            logger: Logger(label: "events")
        )
        let environmentId = TestServers.uniqueName("env")
        let waitpoints = (0..<2).map { index in
            Waitpoint(
                item: Self.completed(TestServers.uniqueName("waitpoint_\(index)"), in: environmentId, output: "done"),
                channel: ChannelAddress(environmentId: environmentId, friendlyId: "session_1", io: .in),
                fromSeqNum: 0
            )
        }
        publisher.enqueue([waitpoints[0]], .completed)
        publisher.enqueue(waitpoints, .completed)  // the sweeper, finding the first one unmarked
        let events = try jetStream.orderedConsumer(
            stream: Subjects.waitpointEventsStream,
            subject: Subjects.waitpointEvent(environmentId: environmentId, kind: .completed)
        )
        let running = Task { try await publisher.run() }
        var published: [String] = []
        for await message in events {
            published += try JSONDecoder.sessions.decode(WaitpointEvent.self, from: message.payload).waitpoints.map(
                \.id
            )
            if Set(published) == Set(waitpoints.map(\.id)) { break }
        }
        #expect(published.sorted() == waitpoints.map(\.id).sorted())
        events.unsubscribe()
        running.cancel()
        await connection.close()
        await database.close()
    }

    @Test(arguments: [
        ("30s", 30.0), ("5m", 300), ("2h", 7200), ("1d", 86_400), ("1w", 604_800), ("1h30m", 5400), ("2hr", 7200),
        ("1w2d3h4m5s", 788_645),
    ])
    func durations(text: String, seconds: Double) {
        #expect(DurationText.seconds(text) == seconds)
    }

    @Test(arguments: ["", "5", "m", "5x", "1.5h", "-5m", "5 m", "0s", "2h1h", "1s1s", "30m1h", "1h1hr", "5200000w"])
    func invalidDurations(text: String) {
        #expect(DurationText.seconds(text) == nil)
    }
}
