import Foundation
import Nats
import TestSupport
import Testing

@Suite(.timeLimit(.minutes(1))) struct ReconnectTests {
    @Test func reconnectsAfterTheServerRestartsAndKeepsSubscriptions() async throws {
        let server = try OwnNatsServer()
        try server.start()
        let connection = try await NatsConnection.connect(
            .init(url: server.url, name: "reconnect", reconnectWait: .milliseconds(100), requestTimeout: .seconds(1))
        )
        #expect(try await TestServers.waitUntil { connection.isConnected }, "never connected")
        let subscription = try connection.subscribe("reconnect.test")
        try await connection.flush()
        var iterator = subscription.makeAsyncIterator()
        try connection.publish("reconnect.test", payload: Data("before".utf8))
        #expect(await iterator.next().map { String(decoding: $0.payload, as: UTF8.self) } == "before")

        try await server.stop()
        #expect(try await TestServers.waitUntil { !connection.isConnected }, "never noticed the server was gone")
        try server.start()
        #expect(try await TestServers.waitUntil { connection.isConnected }, "never reconnected")

        // The subscription was restored on the new connection: a message now still arrives.
        try await connection.flush()
        try connection.publish("reconnect.test", payload: Data("after".utf8))
        #expect(await iterator.next().map { String(decoding: $0.payload, as: UTF8.self) } == "after")
        // And request/reply works again.
        let echo = try connection.subscribe("reconnect.echo")
        try await connection.flush()
        async let reply = connection.request("reconnect.echo", payload: Data("ping".utf8))
        for await message in echo {
            try connection.publish(message.replySubject!, payload: Data("pong".utf8))
            break
        }
        #expect(String(decoding: try await reply.payload, as: UTF8.self) == "pong")
        await connection.close()
        try await server.stop()
    }

    /// The standing pull request lives on the server's side of the old connection: after a
    /// reconnect, a consumer asks again at once instead of waiting for missed heartbeats.
    @Test func aPullConsumerReadsOnAfterTheServerRestarts() async throws {
        let server = try OwnNatsServer(jetStream: true)
        try server.start()
        let connection = try await NatsConnection.connect(
            .init(
                url: server.url,
                name: "reconnect-pull",
                reconnectWait: .milliseconds(100),
                requestTimeout: .seconds(2)
            )
        )
        #expect(try await TestServers.waitUntil { connection.isConnected }, "never connected")
        let jetStream = try JetStream(connection: connection)
        _ = try await jetStream.createOrUpdateStream(StreamConfiguration(name: "PULL", subjects: ["pull.>"]))
        let consumer = try await jetStream.pullConsumer(stream: "PULL", durable: "pull", filterSubject: "pull.>")
        _ = try await jetStream.publish("pull.a", payload: Data("before".utf8))
        let before = try await consumer.fetch(atLeast: 1)
        #expect(before.map { String(decoding: $0.message.payload, as: UTF8.self) } == ["before"])
        try before.forEach { try $0.ack() }

        try await server.stop()
        #expect(try await TestServers.waitUntil { !connection.isConnected }, "never noticed the server was gone")
        try server.start()
        #expect(try await TestServers.waitUntil { connection.isConnected }, "never reconnected")
        // Tried until JetStream is back; the message id keeps a retry whose ack was lost from
        // storing it twice.
        let published = try await TestServers.waitUntil {
            (try? await jetStream.publish("pull.a", payload: Data("after".utf8), messageID: "after")) != nil
        }
        #expect(published)
        let started = ContinuousClock.now
        let after = try await consumer.fetch(atLeast: 1, within: .seconds(20))
        #expect(after.map { String(decoding: $0.message.payload, as: UTF8.self) } == ["after"])
        // Three missed heartbeats would be 6 s.
        #expect(ContinuousClock.now - started < .seconds(4))
        consumer.stop()
        await connection.close()
        try await server.remove()
    }
}
