import Contracts
import Foundation
import HTTPClient
import Hummingbird
import Logging
import Nats
import ServiceKit
import Synchronization
import TestSupport
import Testing

@testable import Realtime

@Suite(.timeLimit(.minutes(1))) struct RealtimeUnitTests {
    /// An in-process JetStream store and hub on the test NATS server.
    func withHub(
        mailboxLimit: Int = 1000,
        _ body: (JetStreamStore, ChannelHub) async throws -> Void
    ) async throws {
        let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "hub-test"))
        let store = JetStreamStore(jetStream: try JetStream(connection: connection))
        try await store.prepare()
        try await body(store, ChannelHub(store: store, mailboxLimit: mailboxLimit, logger: Logger(label: "test")))
        await connection.close()
    }

    func channel() -> ChannelAddress {
        ChannelAddress(
            environmentId: TestServers.uniqueName("env"),
            friendlyId: TestServers.uniqueName("session"),
            io: .out
        )
    }

    @Test(arguments: [
        "plain", "", "quote \" back\\slash /", "line\nbreak\ttab\r\u{08}\u{0C}\u{01}\u{1F}", "ünïcødé 🚀 \u{2028}",
    ])
    func handWrittenJSONIsWhatJSONEncoderWrites(text: String) throws {
        struct Envelope: Codable, Equatable {
            var data: String
            var id: String
        }
        let envelope = RecordJSON.envelope(data: text, id: "id-" + text)
        #expect(
            envelope
                == String(
                    decoding: try JSONEncoder.sessions.encode(Envelope(data: text, id: "id-" + text)),
                    as: UTF8.self
                )
        )
        let records = [
            ChannelRecord(seqNum: 7, timestamp: 1_795_000_000_123, body: envelope),
            ChannelRecord(seqNum: 8, timestamp: -1, body: text),
        ]
        var buffer = ByteBuffer()
        RecordJSON.writeBatch(records, to: &buffer)
        #expect(
            String(buffer: buffer)
                == String(decoding: try JSONEncoder.sessions.encode(["records": records]), as: UTF8.self)
        )
        struct Batch: Decodable { var records: [ChannelRecord] }
        #expect(try JSONDecoder().decode(Batch.self, from: Data(buffer.readableBytesView)).records == records)
    }

    @Test func oneUpstreamFeedServesEverySubscriberOfAChannel() async throws {
        try await withHub { store, hub in
            let channel = channel()
            let subscriptions = try (0..<50).map { _ in try hub.subscribe(channel, from: 0) }
            #expect(hub.counts.channels == 1 && hub.counts.subscribers == 50)
            for index in 0..<20 {
                _ = try await store.append(channel, bodies: ["r\(index)"], partId: nil, matchSeqNum: nil)
            }
            for subscription in subscriptions {
                var received: [UInt64] = []
                while received.count < 20, let records = try await subscription.next() {
                    received += records.map(\.seqNum)
                }
                #expect(received == Array(0..<20))
            }
            subscriptions.forEach { $0.cancel() }
            #expect(hub.counts.channels == 0 && hub.counts.subscribers == 0, "the feed stops with its last subscriber")
        }
    }

    @Test func aFeedEndingAsTheNextSubscriberArrivesLeavesTheNewFeedAlone() async throws {
        try await withHub { store, hub in
            let channel = channel()
            for round in UInt64(0)..<10 {
                // The last subscriber leaves, and another comes before the old feed has wound down.
                try hub.subscribe(channel, from: round * 2).cancel()
                let next = try hub.subscribe(channel, from: round * 2)
                for index in 0..<2 {
                    _ = try await store.append(channel, bodies: ["r\(index)"], partId: nil, matchSeqNum: nil)
                }
                var received: [UInt64] = []
                while received.count < 2, let records = try await next.next() { received += records.map(\.seqNum) }
                #expect(received == [round * 2, round * 2 + 1], "round \(round): each record once, in order")
                #expect(hub.counts.channels == 1 && hub.counts.subscribers == 1)
                next.cancel()
            }
            #expect(hub.counts.channels == 0)
        }
    }

    @Test func aRecordAppendedWhileTheFeedBeginsIsDelivered() async throws {
        try await withHub { store, _ in
            let gated = GatedTailStore(store)
            let hub = ChannelHub(store: gated, logger: Logger(label: "test"))
            let channel = channel()
            let subscription = try hub.subscribe(channel, from: 0)
            defer { subscription.cancel() }
            // The subscriber replays an empty channel while its feed is still finding the tail…
            let first = Task { try await subscription.next() }
            #expect(try await TestServers.waitUntil { gated.reads.load(ordering: .relaxed) > 0 })
            // …a record lands, and only then does the feed begin, after it.
            _ = try await store.append(channel, bodies: ["between"], partId: nil, matchSeqNum: nil)
            gated.open()
            var received =
                try await withTimeout(.seconds(5)) {
                    try await withTaskCancellationHandler {
                        try await first.value
                    } onCancel: {
                        first.cancel()
                    }
                } ?? []
            // The feed's beginning wakes the subscriber first; the record follows.
            if received.isEmpty {
                received = try await withTimeout(.seconds(5)) { try await subscription.next() } ?? []
            }
            #expect(received.map(\.body) == ["between"])
        }
    }

    @Test func aReadStopsAfterAboutAMebibyteButReturnsAtLeastOneRecord() async throws {
        try await withHub { store, _ in
            let channel = channel()
            let large = String(repeating: "x", count: 700 * 1024)
            for _ in 0..<4 {
                _ = try await store.append(channel, bodies: [large], partId: nil, matchSeqNum: nil)
            }
            let first = try await store.read(channel, from: 0, limit: 500)
            #expect((1...2).contains(first.count), "\(first.count) records of 700 KiB")
            var all = first
            while let last = all.last, last.seqNum < 3 {
                all += try await store.read(channel, from: last.seqNum + 1, limit: 500)
            }
            #expect(all.map(\.seqNum) == [0, 1, 2, 3])
        }
    }

    @Test func aSubscriberReplaysPastTheReadByteLimit() async throws {
        try await withHub { store, hub in
            let channel = channel()
            let large = String(repeating: "y", count: 400 * 1024)
            for _ in 0..<6 {
                _ = try await store.append(channel, bodies: [large], partId: nil, matchSeqNum: nil)
            }
            let subscription = try hub.subscribe(channel, from: 0)
            defer { subscription.cancel() }
            var received: [UInt64] = []
            while received.count < 6, let records = try await subscription.next() { received += records.map(\.seqNum) }
            #expect(received == Array(0..<6), "history comes whole though no live record follows")
        }
    }

    @Test func aMailboxEndsOnceItsRecordsReachItsByteLimit() async throws {
        let mailbox = Mailbox(limit: 1000, byteLimit: 1000)
        let record = { (seqNum: UInt64) in
            ChannelRecord(seqNum: seqNum, timestamp: 0, body: String(repeating: "z", count: 400))
        }
        #expect(mailbox.push([record(0), record(1)]))
        #expect(try await mailbox.next()?.count == 2, "taking records frees their bytes")
        #expect(mailbox.push([record(2), record(3)]))
        #expect(!mailbox.push([record(4)]), "1,200 bytes waiting is over the limit")
        await #expect(throws: Mailbox.Ending.tooSlow) { try await mailbox.next() }
    }

    @Test func aSubscriberThatFallsBehindIsEndedInsteadOfBuffering() async throws {
        try await withHub(mailboxLimit: 16) { store, hub in
            let channel = channel()
            let slow = try hub.subscribe(channel, from: 0)
            let fast = try hub.subscribe(channel, from: 0)
            // The fast subscriber keeps reading while 40 records arrive; the slow one never reads.
            let reader = Task {
                var received: [UInt64] = []
                while received.count < 40, let records = try await fast.next() { received += records.map(\.seqNum) }
                return received
            }
            for index in 0..<40 {
                _ = try await store.append(channel, bodies: ["r\(index)"], partId: nil, matchSeqNum: nil)
            }
            #expect(try await reader.value == Array(0..<40))
            await #expect(throws: Mailbox.Ending.tooSlow) {
                while try await slow.next() != nil {}
            }
            #expect(hub.counts.subscribers == 1)
            fast.cancel()
        }
    }

    @Test func storeReadsFindAnyPositionAmongOtherChannels() async throws {
        try await withHub { store, _ in
            let channels = (0..<3).map { _ in channel() }
            // Interleave three channels so stream sequences and channel sequence numbers differ.
            for index in 0..<60 {
                _ = try await store.append(channels[index % 3], bodies: ["\(index)"], partId: nil, matchSeqNum: nil)
            }
            for seqNum in UInt64(0)..<20 {
                let records = try await store.read(channels[1], from: seqNum, limit: 5)
                #expect(records.map(\.seqNum) == Array(seqNum..<min(seqNum + 5, 20)))
                #expect(records.first?.body == String(Int(seqNum) * 3 + 1))
            }
            #expect(try await store.read(channels[1], from: 20, limit: 5).isEmpty)
            #expect(try await store.tail(channels[2]).nextSeqNum == 20)
            let batch = try await store.append(channels[0], bodies: ["a", "b", "c"], partId: nil, matchSeqNum: 20)
            #expect(batch.start == 20 && batch.end == 23)
            await #expect(throws: StreamStoreError.seqNumMismatch(nextSeqNum: 23)) {
                try await store.append(channels[0], bodies: ["d"], partId: nil, matchSeqNum: 20)
            }
        }
    }

    @Test func theOpenAPIDocumentDescribesEveryRealtimeRoute() async throws {
        let stack = try await ServicesFixture.shared.value
        let response = try await stack.get(stack.controlPlane.baseURL + "/api/openapi.json")
        let documented = try RouteDocument.documented(response.body, prefixes: ["/realtime/"])
        let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "routes"))
        let configuration = try RealtimeConfiguration(environment: Environment([:]))
        let api = try await RealtimeAPI(
            configuration: configuration,
            connection: connection,
            logger: Logger(label: "routes")
        )
        let router = Router(context: APIRequestContext.self)
        api.addRoutes(to: router, authenticator: NatsAuthenticator(connection: connection))
        let routed = RouteDocument.routed(router)
        await connection.close()
        #expect(
            documented == routed,
            "only documented: \(documented.subtracting(routed)); only routed: \(routed.subtracting(documented))"
        )
    }
}

/// A store whose `tail` waits until ``open()``, and which counts reads: lets a test put a
/// record between a subscriber's replay and its feed's start.
final class GatedTailStore: StreamStore {
    let inner: JetStreamStore
    let reads = Atomic<Int>(0)
    private let gate: AsyncStream<Void>
    private let opener: AsyncStream<Void>.Continuation

    init(_ inner: JetStreamStore) {
        self.inner = inner
        (gate, opener) = AsyncStream.makeStream()
    }

    func open() { opener.finish() }

    func append(
        _ channel: ChannelAddress,
        records: [NewRecord],
        partId: String?,
        matchSeqNum: UInt64?,
        admit: @Sendable () async throws -> Void
    ) async throws
        -> AppendAck
    {
        try await inner.append(channel, records: records, partId: partId, matchSeqNum: matchSeqNum, admit: admit)
    }

    func read(_ channel: ChannelAddress, from seqNum: UInt64, limit: Int) async throws -> [ChannelRecord] {
        defer { reads.add(1, ordering: .relaxed) }
        return try await inner.read(channel, from: seqNum, limit: limit)
    }

    func tail(_ channel: ChannelAddress) async throws -> ChannelTail {
        for await _ in gate {}
        return try await inner.tail(channel)
    }

    func follow(
        _ channel: ChannelAddress,
        from seqNum: UInt64
    ) async throws
        -> AsyncThrowingStream<ChannelRecord, any Error>
    {
        try await inner.follow(channel, from: seqNum)
    }
}

@Suite(.timeLimit(.minutes(1))) struct SessionDirectoryTests {
    static func session(closedAt: Date?) -> SessionRecord {
        SessionRecord(
            id: "s1",
            friendlyId: "session_s1",
            externalId: nil,
            type: "t",
            taskIdentifier: nil,
            tags: [],
            metadata: nil,
            triggerConfig: nil,
            organizationId: "o",
            projectId: "p",
            environmentId: "env",
            environmentType: .development,
            closedAt: closedAt,
            closedReason: nil,
            expiresAt: nil,
            createdAt: Date(),
            updatedAt: Date()
        )
    }

    /// A directory whose `sessions.resolve` requests the test answers itself, on a NATS server
    /// of its own.
    func withDirectory(
        creationLook: Duration = .seconds(1),
        _ body: (SessionDirectory, NatsConnection, NatsSubscription) async throws -> Void
    ) async throws {
        let server = try OwnNatsServer()
        try server.start()
        let controlPlane = try await NatsConnection.connect(.init(url: server.url, name: "control plane"))
        let requests = try controlPlane.subscribe(Subjects.resolveSession)
        try await controlPlane.flush()
        let connection = try await NatsConnection.connect(.init(url: server.url, name: "realtime"))
        let directory = SessionDirectory(
            connection: connection,
            creationLook: creationLook,
            logger: Logger(label: "test")
        )
        try await body(directory, controlPlane, requests)
        await connection.close()
        await controlPlane.close()
        try await server.stop()
    }

    /// Waiting for a session that does not exist yet (a subscriber by externalId before the
    /// task created it) looks for it about once a second. It used to look in a tight loop after
    /// the first second — about a thousand lookups a second, each a PostgreSQL query, for as
    /// long as the subscriber waited.
    @Test func waitingForASessionLooksAboutOnceASecond() async throws {
        try await withDirectory { directory, controlPlane, requests in
            let answering = Task {
                var count = 0
                for await request in requests {
                    count += 1
                    guard let reply = request.replySubject else { continue }
                    try? controlPlane.publish(
                        reply,
                        payload: Data(#"{"error":"Session not found"}"#.utf8),
                        headers: ["Nats-Service-Error": "Session not found", "Nats-Service-Error-Code": "404"]
                    )
                }
                return count
            }
            let found = try await directory.waitForSession("later", environmentId: "env", timeout: .seconds(3))
            #expect(found == nil)
            requests.unsubscribe()
            let count = await answering.value
            #expect((2...6).contains(count), "\(count) lookups in 3 s")
        }
    }

    /// A created event wakes whoever waits for that session at once, not at its next look (a
    /// minute later here). (The directory skips created events while no one waits and no lookup
    /// is under way; a waiter must still get them.)
    @Test func aCreatedEventWakesAWaiterAtOnce() async throws {
        try await withDirectory(creationLook: .seconds(60)) { directory, controlPlane, requests in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await directory.run() }
                var iterator = requests.makeAsyncIterator()
                let waiting = Task {
                    try await directory.waitForSession("later", environmentId: "env", timeout: .seconds(30))
                }
                let first = try #require(await iterator.next()?.replySubject)
                try controlPlane.publish(
                    first,
                    payload: Data(#"{"error":"Session not found"}"#.utf8),
                    headers: ["Nats-Service-Error": "Session not found", "Nats-Service-Error-Code": "404"]
                )
                let answered = ContinuousClock.now
                var session = Self.session(closedAt: nil)
                session.externalId = "later"
                let event = try JSONEncoder.sessions.encode(SessionEvent(kind: .created, session: session))
                // Until the directory's subscription is in place, an event could pass it by.
                let publishing = Task {
                    while !Task.isCancelled {
                        try controlPlane.publish(
                            Subjects.sessionEvent(environmentId: "env", kind: .created),
                            payload: event
                        )
                        try await Task.sleep(for: .milliseconds(20))
                    }
                }
                let second = try #require(await iterator.next()?.replySubject)
                let waited = ContinuousClock.now - answered
                publishing.cancel()
                try controlPlane.publish(second, payload: try JSONEncoder.sessions.encode(session))
                #expect(try await waiting.value?.externalId == "later")
                #expect(waited < .seconds(30), "looked again after \(waited), not woken by the event")
                group.cancelAll()
            }
        }
    }

    /// Subscribers arriving together share one lookup of their session.
    @Test func concurrentLookupsOfASessionAreOne() async throws {
        try await withDirectory { directory, controlPlane, requests in
            var iterator = requests.makeAsyncIterator()
            let many = Task {
                try await withThrowingTaskGroup(of: SessionRecord?.self) { group in
                    for _ in 0..<100 {
                        group.addTask { try await directory.session("session_s1", environmentId: "env") }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
            }
            let first = try #require(await iterator.next()?.replySubject)
            try controlPlane.publish(first, payload: try JSONEncoder.sessions.encode(Self.session(closedAt: nil)))
            let answers = try await many.value
            #expect(answers.count == 100 && answers.allSatisfy { $0?.friendlyId == "session_s1" })
            requests.unsubscribe()
            var more = 0
            while await iterator.next() != nil { more += 1 }
            #expect(more == 0, "\(more) more lookups")
        }
    }

    /// A lookup that read the session before its close, and whose answer came late, must not
    /// replace the closed session a later lookup cached: appends would be taken for 30 s. Nor
    /// does a request after the close's notice wait for that lookup: it asks again.
    @Test func aLateAnswerFromBeforeACloseDoesNotReplaceTheClosedSession() async throws {
        try await withDirectory { directory, controlPlane, requests in
            var iterator = requests.makeAsyncIterator()
            let slow = Task { try await directory.session("session_s1", environmentId: "env") }
            let first = try #require(await iterator.next()?.replySubject)  // read before the close; held
            directory.forget(["session_s1"], environmentId: "env", isNew: false)  // the close's notice
            let fresh = Task { try await directory.session("session_s1", environmentId: "env") }
            let second = try #require(await iterator.next()?.replySubject)
            try controlPlane.publish(second, payload: try JSONEncoder.sessions.encode(Self.session(closedAt: Date())))
            #expect(try await fresh.value?.closedAt != nil)
            try controlPlane.publish(first, payload: try JSONEncoder.sessions.encode(Self.session(closedAt: nil)))
            #expect(try await slow.value?.closedAt == nil, "the late answer itself is what was read")
            #expect(try await directory.session("session_s1", environmentId: "env")?.closedAt != nil)
        }
    }
}
