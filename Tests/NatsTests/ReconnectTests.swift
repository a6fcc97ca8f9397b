import Foundation
import Nats
import TestSupport
import Testing

/// A NATS server of this test's own, so it can be stopped and started again.
final class OwnNatsServer: @unchecked Sendable {
    let port: Int
    private var process: Process?

    init() throws { port = try TestServers.freePort() }

    var url: String { "nats://127.0.0.1:\(port)" }

    func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try TestServers.natsServerBinary)
        process.arguments = ["-a", "127.0.0.1", "-p", String(port)]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
    }

    func stop() async throws {
        guard let process else { return }
        process.terminate()
        _ = try await TestServers.waitUntil { !process.isRunning }
        self.process = nil
    }
}

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
}
