import Contracts
import Foundation
import Logging
import Nats
import ServiceLifecycle
import ServiceLifecycleTestKit
import Synchronization
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

    /// With 2 requests running and 2 waiting, the other 6 of 10 are answered `unavailable` at
    /// once instead of piling up; those held are answered once the handler can go on.
    @Test func anOverloadedEndpointShedsTheOldestWaitingRequests() async throws {
        let name = TestServers.uniqueName("busy")
        let connection = try await connect(name)
        try await waitConnected(connection)
        let gate = Gate()
        let service = NatsService(
            connection: connection,
            name: name,
            version: "1.0.0",
            description: "busy",
            endpoints: [NatsEndpoint(name: "slow", subject: "\(name).slow") { _ in await gate.wait() }],
            concurrency: 2,
            waiting: 2,
            logger: Logger(label: "test")
        )
        let outcomes = Tally()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            #expect(
                try await TestServers.waitUntil {
                    (try? await connection.request("$SRV.PING.\(name)", timeout: .milliseconds(200))) != nil
                }
            )
            var requests: [Task<Void, Never>] = []
            for _ in 0..<10 {
                requests.append(
                    Task {
                        do {
                            _ = try await connection.serviceRequest("\(name).slow", timeout: .seconds(20))
                            outcomes.answered.add(1, ordering: .relaxed)
                        } catch let error as NatsServiceError where error.code == .unavailable {
                            outcomes.shed.add(1, ordering: .relaxed)
                        } catch {
                            Issue.record("\(error)")
                        }
                    }
                )
            }
            let shed = try await TestServers.waitUntil(timeout: .seconds(10)) {
                outcomes.shed.load(ordering: .relaxed) >= 6
            }
            #expect(shed, "\(outcomes.shed.load(ordering: .relaxed)) shed")
            gate.open()
            for request in requests { await request.value }
            let (answered, dropped) = (
                outcomes.answered.load(ordering: .relaxed), outcomes.shed.load(ordering: .relaxed)
            )
            #expect(answered + dropped == 10 && answered >= 2 && answered <= 4, "\(answered) answered, \(dropped) shed")
            group.cancelAll()
        }
        await connection.close()
    }
}

/// Counts of a test's requests by outcome.
final class Tally: Sendable {
    let answered = Atomic<Int>(0)
    let shed = Atomic<Int>(0)
}

/// Holds every caller of `wait()` until `open()`.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async -> Data {
        await withCheckedContinuation { continuation in
            let go = state.withLock { state in
                if state.open { return true }
                state.waiting.append(continuation)
                return false
            }
            if go { continuation.resume() }
        }
        return Data()
    }

    func open() {
        let waiting = state.withLock { state in
            state.open = true
            defer { state.waiting = [] }
            return state.waiting
        }
        for continuation in waiting { continuation.resume() }
    }
}
