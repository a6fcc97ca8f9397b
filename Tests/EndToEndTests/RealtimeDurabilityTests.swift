import Contracts
import Foundation
import HTTPClient
import TestSupport
import Testing

@Suite(.serialized, .timeLimit(.minutes(2))) struct RealtimeDurabilityTests {
    @Test func killDashNineDuringAWriteBurstLosesNoAcknowledgedRecord() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let victim = try ServiceProcess(.realtime, extraEnvironment: ServicesFixture.realtimeEnvironment)
        try victim.start()
        #expect(try await victim.waitUntilReady(stack.http), "\(victim.output)")
        let url = victim.baseURL + "/realtime/v1/sessions/\(session.id)/out/append"
        // Four writers append as fast as they can; each remembers what was acknowledged.
        let acknowledged = try await withThrowingTaskGroup(of: [String: UInt64].self) { group in
            for writer in 0..<4 {
                group.addTask {
                    var acks: [String: UInt64] = [:]
                    for index in 0..<10_000 {
                        let partId = "w\(writer)-\(index)"
                        let response = try? await stack.http.execute(
                            HTTPRequest(
                                method: "POST",
                                url: url,
                                headers: ["Authorization": "Bearer \(stack.apiKey)", "X-Part-Id": partId],
                                body: Data(partId.utf8),
                                timeout: .seconds(2)
                            )
                        )
                        guard let response, response.status == 200 else { break }
                        acks[partId] = try JSONDecoder().decode(ServicesFixture.AppendBody.self, from: response.body)
                            .seqNum
                    }
                    return acks
                }
            }
            group.addTask {
                _ = try await TestServers.waitUntil(timeout: .seconds(30)) {
                    let head = try await stack.http.execute(
                        HTTPRequest(method: "HEAD", url: stack.channelURL(session.id), headers: stack.auth)
                    )
                    return Int(head.headers["X-Last-Seq-Num"] ?? "") ?? -1 >= 150
                }
                kill(victim.process.processIdentifier, SIGKILL)
                return [:]
            }
            return try await group.reduce(into: [:]) { $0.merge($1) { first, _ in first } }
        }
        #expect(acknowledged.count >= 150)
        let records = try await stack.subscribe(session.id, instance: 1).events.flatMap(\.records)
        #expect(records.map(\.seqNum) == Array(0..<UInt64(records.count)), "dense after the crash")
        let stored = Dictionary(records.map { ($0.envelope?.id ?? "", $0.seqNum) }) { first, _ in first }
        #expect(stored.count == records.count, "no part id stored twice")
        for (partId, seqNum) in acknowledged {
            #expect(stored[partId] == seqNum, "acknowledged \(partId) at \(seqNum)")
        }
        // Retrying every write the crash may have cut off stores nothing twice.
        let retried = try await stack.appended(session.id, "w0-0", partId: "w0-0", instance: 1)
        #expect(retried == acknowledged["w0-0"])
    }

    @Test func sseStreamsEndCleanlyOnGracefulShutdown() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let instance = try ServiceProcess(.realtime, extraEnvironment: ServicesFixture.realtimeEnvironment)
        try instance.start()
        #expect(try await instance.waitUntilReady(stack.http), "\(instance.output)")
        _ = try await stack.appended(session.id, "one")
        let response = try await stack.http.stream(
            HTTPRequest(
                url: instance.baseURL + "/realtime/v1/sessions/\(session.id)/out",
                headers: ["Authorization": "Bearer \(stack.apiKey)", "Timeout-Seconds": "600"]
            )
        )
        #expect(response.status == 200)
        var parser = ServerSentEventParser()
        var received: [SSERecord] = []
        var ended = false
        var terminated: Task<Int32?, any Error>?
        for try await chunk in response.body {
            received += parser.feed(chunk).flatMap(\.records)
            if received.count == 1, terminated == nil {
                terminated = Task { try await instance.terminate(timeout: .seconds(8)) }
            }
        }
        ended = true
        #expect(ended && received.map(\.seqNum) == [0])
        #expect(try await terminated?.value == 0, "exit 0 promptly with a stream open:\n\(instance.output)")
    }
}
