import Contracts
import Foundation
import Logging
import Nats
import ServiceLifecycle
import ServiceLifecycleTestKit
import TestSupport
import Testing

@Suite(.timeLimit(.minutes(1))) struct NatsServiceTests {
    /// Runs a service with an echo endpoint and a failing one while `body` runs.
    func withService(
        name: String,
        _ body: (NatsConnection, NatsService) async throws -> Void
    ) async throws {
        let connection = try await connect(name)
        try await waitConnected(connection)
        let service = NatsService(
            connection: connection,
            name: name,
            version: "1.2.3",
            description: "test service",
            metadata: ["instance": "test"],
            endpoints: [
                NatsEndpoint(name: "echo", subject: "\(name).echo") { message in Data("echo:".utf8) + message.payload },
                NatsEndpoint(name: "fail", subject: "\(name).fail") { _ in
                    throw NatsServiceError(.notFound, "no such thing")
                },
                NatsEndpoint(name: "crash", subject: "\(name).crash") { _ in throw CocoaError(.fileNoSuchFile) },
                NatsEndpoint(name: "down", subject: "\(name).down") { _ in
                    throw NatsError(.connectionFailed, message: "secret upstream detail")
                },
            ],
            logger: Logger(label: "test")
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            // The service subscribes as it starts; wait until it answers discovery.
            let ready = try await TestServers.waitUntil {
                (try? await connection.request("$SRV.PING.\(name)", timeout: .milliseconds(200))) != nil
            }
            #expect(ready)
            try await body(connection, service)
            group.cancelAll()
        }
        await connection.close()
    }

    @Test func endpointsAnswerAndErrorsUseServiceHeaders() async throws {
        let name = TestServers.uniqueName("svc")
        try await withService(name: name) { connection, _ in
            let reply = try await connection.serviceRequest("\(name).echo", payload: Data("hi".utf8))
            #expect(String(decoding: reply, as: UTF8.self) == "echo:hi")

            let raw = try await connection.request("\(name).fail")
            #expect(raw.headers[ServiceErrorHeaders.code] == "404")
            #expect(raw.headers[ServiceErrorHeaders.description] == "no such thing")
            #expect(try JSONDecoder().decode(ErrorBody.self, from: raw.payload).error == "no such thing")

            await #expect(throws: NatsServiceError(.notFound, "no such thing")) {
                try await connection.serviceRequest("\(name).fail")
            }
            // Unexpected errors never leak their text.
            await #expect(throws: NatsServiceError(.internalError, "Internal Server Error")) {
                try await connection.serviceRequest("\(name).crash")
            }
            // A dependency that is down says "try again", again without its text.
            let down = await #expect(throws: NatsServiceError.self) {
                try await connection.serviceRequest("\(name).down")
            }
            #expect(down == NatsServiceError(.unavailable, "Service temporarily unavailable; try again"))
            // So the HTTP layer of a service that passes it on answers 503, not 500.
            #expect(down?.isRetriable == true)
            #expect(!NatsServiceError(.internalError, "Internal Server Error").isRetriable)
        }
    }

    @Test func discoveryAnswersPingInfoAndStats() async throws {
        let name = TestServers.uniqueName("svc")
        try await withService(name: name) { connection, service in
            _ = try await connection.serviceRequest("\(name).echo", payload: Data("x".utf8))
            _ = try? await connection.serviceRequest("\(name).fail")

            let ping = try JSONDecoder().decode(
                ServiceDiscovery.Ping.self,
                from: try await connection.request("$SRV.PING.\(name)").payload
            )
            #expect(ping.type == ServiceDiscovery.pingType)
            #expect(ping.name == name && ping.id == service.id && ping.version == "1.2.3")
            #expect(ping.metadata == ["instance": "test"])

            let info = try JSONDecoder().decode(
                ServiceDiscovery.Info.self,
                from: try await connection.request("$SRV.INFO.\(name).\(service.id)").payload
            )
            #expect(info.description == "test service")
            #expect(info.endpoints.map(\.subject) == ["\(name).echo", "\(name).fail", "\(name).crash", "\(name).down"])
            #expect(info.endpoints.allSatisfy { $0.queueGroup == "q" })

            let stats = try JSONDecoder().decode(
                ServiceDiscovery.Stats.self,
                from: try await connection.request("$SRV.STATS.\(name)").payload
            )
            let echo = try #require(stats.endpoints.first { $0.name == "echo" })
            let fail = try #require(stats.endpoints.first { $0.name == "fail" })
            #expect(echo.numRequests == 1 && echo.numErrors == 0)
            #expect(fail.numRequests == 1 && fail.numErrors == 1 && fail.lastError == "404:no such thing")
            #expect(echo.processingTime > 0)
        }
    }

    @Test func gracefulShutdownDrainsAndEndsRun() async throws {
        let name = TestServers.uniqueName("svc")
        let connection = try await connect(name)
        try await waitConnected(connection)
        let service = NatsService(
            connection: connection,
            name: name,
            version: "1.0.0",
            description: "slow",
            endpoints: [
                NatsEndpoint(name: "slow", subject: "\(name).slow") { _ in
                    try await Task.sleep(for: .milliseconds(300))
                    return Data("done".utf8)
                }
            ],
            logger: Logger(label: "test")
        )
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await service.run() }
                _ = try await TestServers.waitUntil {
                    (try? await connection.request("$SRV.PING.\(name)", timeout: .milliseconds(200))) != nil
                }
                async let reply = connection.serviceRequest("\(name).slow")
                try await Task.sleep(for: .milliseconds(50))
                trigger.triggerGracefulShutdown()
                // The request in flight is still answered; then run() returns.
                #expect(String(decoding: try await reply, as: UTF8.self) == "done")
                try await group.waitForAll()
            }
        }
        await connection.close()
    }
}
