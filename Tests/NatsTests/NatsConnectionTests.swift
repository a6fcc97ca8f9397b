import Contracts
import Foundation
import TestSupport
import Testing

@testable import Nats

func connect(_ name: String = "nats-tests") async throws -> NatsConnection {
    try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: name, requestTimeout: .seconds(2)))
}

func waitConnected(_ connection: NatsConnection) async throws {
    #expect(try await TestServers.waitUntil { connection.isConnected }, "never connected to NATS")
}

@Suite(.timeLimit(.minutes(1))) struct NatsConnectionTests {
    @Test func publishAndSubscribeCarryHeadersAndPayload() async throws {
        let connection = try await connect()
        try await waitConnected(connection)
        let subject = TestServers.uniqueName("test.pubsub")
        let subscription = try connection.subscribe(subject)
        try await connection.flush()
        try connection.publish(subject, payload: Data("hello".utf8), headers: ["X-Trace": "t-1"])
        var iterator = subscription.makeAsyncIterator()
        let message = try #require(await iterator.next())
        #expect(message.subject == subject)
        #expect(String(decoding: message.payload, as: UTF8.self) == "hello")
        #expect(message.headers["X-Trace"] == "t-1")
        await connection.close()
    }

    @Test func requestReplyRoundTrips() async throws {
        let connection = try await connect()
        try await waitConnected(connection)
        let subject = TestServers.uniqueName("test.echo")
        let subscription = try connection.subscribe(subject)
        try await connection.flush()
        async let reply = connection.request(subject, payload: Data("ping".utf8))
        for await message in subscription {
            try connection.publish(message.replySubject!, payload: Data("echo:".utf8) + message.payload)
            break
        }
        #expect(String(decoding: try await reply.payload, as: UTF8.self) == "echo:ping")
        // The reply was taken on cnats' reader thread, not passed to a delivery thread; a
        // message on the reply subject whose last token is not a request number goes on to the
        // subscription (one with a number no request waits for is dropped, as it was there).
        #expect(connection.repliesPassedOn == 0)
        try connection.publish(connection.pendingRequests.inbox + "not-a-request")
        #expect(try await TestServers.waitUntil { connection.repliesPassedOn == 1 })
        await connection.close()
    }

    @Test func requestWithoutSubscriberIsNoResponders() async throws {
        let connection = try await connect()
        try await waitConnected(connection)
        await #expect(throws: NatsError.self) {
            do {
                _ = try await connection.request(TestServers.uniqueName("test.nobody"))
            } catch let error as NatsError {
                #expect(error.code == .noResponders)
                #expect(error.isRetriable)
                throw error
            }
        }
        await connection.close()
    }

    @Test func requestThatIsNeverAnsweredTimesOut() async throws {
        let connection = try await connect()
        try await waitConnected(connection)
        let subject = TestServers.uniqueName("test.silent")
        let subscription = try connection.subscribe(subject)
        try await connection.flush()
        let start = ContinuousClock.now
        await #expect(throws: NatsError.self) {
            do {
                _ = try await connection.request(subject, timeout: .milliseconds(200))
            } catch let error as NatsError {
                #expect(error.code == .timeout)
                throw error
            }
        }
        #expect(ContinuousClock.now - start < .seconds(2))
        subscription.unsubscribe()
        await connection.close()
    }

    @Test func queueGroupDeliversEachMessageToOneMember() async throws {
        let connection = try await connect()
        try await waitConnected(connection)
        let subject = TestServers.uniqueName("test.queue")
        let first = try connection.subscribe(subject, queue: "workers")
        let second = try connection.subscribe(subject, queue: "workers")
        try await connection.flush()
        for index in 0..<50 { try connection.publish(subject, payload: Data("\(index)".utf8)) }
        try await connection.flush()
        let received = try await withThrowingTaskGroup(of: [String].self) { group in
            for subscription in [first, second] {
                group.addTask {
                    var seen: [String] = []
                    for await message in subscription { seen.append(String(decoding: message.payload, as: UTF8.self)) }
                    return seen
                }
            }
            // Wait until all 50 are in, then end both streams.
            try await Task.sleep(for: .milliseconds(300))
            first.drain()
            second.drain()
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(received.count == 50)
        #expect(Set(received) == Set((0..<50).map(String.init)))
        await connection.close()
    }

    @Test func drainEndsTheSubscriptionAfterPendingMessages() async throws {
        let connection = try await connect()
        try await waitConnected(connection)
        let subject = TestServers.uniqueName("test.drain")
        let subscription = try connection.subscribe(subject)
        try await connection.flush()
        for index in 0..<10 { try connection.publish(subject, payload: Data("\(index)".utf8)) }
        try await connection.flush()
        subscription.drain()
        var count = 0
        for await _ in subscription { count += 1 }
        #expect(count == 10)
        await connection.close()
    }

    @Test func connectingToNothingKeepsRetryingAndReportsDisconnected() async throws {
        let port = try TestServers.freePort()
        let connection = try await NatsConnection.connect(.init(url: "nats://127.0.0.1:\(port)", name: "nobody"))
        #expect(!connection.isConnected)
        await #expect(throws: NatsError.self) { try await connection.flush(timeout: .milliseconds(200)) }
        await connection.close()
    }
}
