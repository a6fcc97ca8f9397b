import Foundation
import Histogram
import NIOCore
import NIOHTTP1
import NIOPosix

/// The wake-up benchmark: `waiters` waiters pending on the `.in` channel of each session, every
/// one long-polling; then one append per session, `pause` after the previous one's answer. Measures append sent →
/// long-poll answered, and checks each answer is `COMPLETED` with its channel's record. All
/// HTTP runs on one event-loop thread, so the client costs little next to the servers.
struct WaitLoad {
    var realtimeURL: String
    var waitpointsURL: String
    var apiKey: String
    var sessions: [String]
    var waiters: Int
    var rounds: Int
    /// Between one append's answer and the next append.
    var pause: Duration = .milliseconds(10)

    private struct Answer: Decodable {
        struct Output: Decodable { var value: String? }
        var status: String
        var output: Output?
    }

    func run() async throws -> [String: Double] {
        try await BenchConnection.onOneEventLoop { try await measure(on: $0) }
    }

    private func measure(on group: MultiThreadedEventLoopGroup) async throws -> [String: Double] {
        var wakeUps = Histogram<UInt64>(highestTrackableValue: 60_000_000)
        var appends = Histogram<UInt64>(highestTrackableValue: 60_000_000)
        var wrong = 0
        for round in 1...rounds {
            FileHandle.standardError.write(
                Data(
                    "[bench] round \(round)/\(rounds): \(sessions.count * waiters) pending waiters on \(sessions.count) channels, one append each\n"
                        .utf8
                )
            )
            let registered = try await register(on: group)
            var polls:
                [(session: String, answer: EventLoopFuture<BenchConnection.Response>, connection: BenchConnection)] = []
            for (session, id) in registered {
                let connection = try await BenchConnection.connect(to: waitpointsURL, apiKey: apiKey, on: group)
                polls.append(
                    (session, connection.request(.GET, "/api/v1/waitpoints/\(id)/wait?timeout=120"), connection)
                )
            }
            // Opening a thousand long-polls keeps the service busy for a second or two (a lookup
            // each); the measurement starts once every one is parked and the machine is quiet.
            try await Task.sleep(for: .seconds(5))
            let appender = try await BenchConnection.connect(to: realtimeURL, apiKey: apiKey, on: group)
            var sent: [String: UInt64] = [:]
            for session in sessions {
                let at = DispatchTime.now().uptimeNanoseconds
                sent[session] = at
                let response =
                    try await appender
                    .request(.POST, "/realtime/v1/sessions/\(session)/in/append", body: "go \(session)").get()
                guard response.status == .ok else { throw LoadError("append answered \(response.status.code)") }
                appends.record((response.arrived - at) / 1000)
                try await Task.sleep(for: pause)
            }
            appender.close()
            for poll in polls {
                let response = try await poll.answer.get()
                poll.connection.close()
                let answer = try? JSONDecoder().decode(Answer.self, from: Data(response.body.readableBytesView))
                guard response.status == .ok, answer?.status == "COMPLETED",
                    answer?.output?.value == "go \(poll.session)",
                    let at = sent[poll.session], response.arrived >= at
                else {
                    wrong += 1
                    continue
                }
                wakeUps.record((response.arrived - at) / 1000)
            }
        }
        return [
            "waiters": Double(sessions.count * waiters), "channels": Double(sessions.count), "rounds": Double(rounds),
            "samples": Double(wakeUps.totalCount), "wrong": Double(wrong),
            "p50Ms": Double(wakeUps.valueAtPercentile(50)) / 1000,
            "p99Ms": Double(wakeUps.valueAtPercentile(99)) / 1000,
            "maxMs": Double(wakeUps.max) / 1000,
            "appendP50Ms": Double(appends.valueAtPercentile(50)) / 1000,
            "appendP99Ms": Double(appends.valueAtPercentile(99)) / 1000,
        ]
    }

    /// Registers the waiters over a few connections at once; (session, waitpoint id) each.
    private func register(on group: MultiThreadedEventLoopGroup) async throws -> [(String, String)] {
        let wanted = sessions.flatMap { Array(repeating: $0, count: waiters) }
        let lanes = 8
        return try await withThrowingTaskGroup(of: [(String, String)].self) { tasks in
            for lane in 0..<lanes {
                tasks.addTask {
                    let connection = try await BenchConnection.connect(to: waitpointsURL, apiKey: apiKey, on: group)
                    defer { connection.close() }
                    var ids: [(String, String)] = []
                    for session in stride(from: lane, to: wanted.count, by: lanes).map({ wanted[$0] }) {
                        let response = try await connection.request(
                            .POST,
                            "/api/v1/runs/run_bench/session-streams/wait",
                            body: #"{"session":"\#(session)","io":"in","timeout":"5m"}"#,
                            json: true
                        ).get()
                        struct Registered: Decodable { var waitpointId: String }
                        guard response.status == .ok,
                            let registered = try? JSONDecoder().decode(
                                Registered.self,
                                from: Data(response.body.readableBytesView)
                            )
                        else {
                            throw LoadError("wait answered \(response.status.code): \(String(buffer: response.body))")
                        }
                        ids.append((session, registered.waitpointId))
                    }
                    return ids
                }
            }
            return try await tasks.reduce(into: []) { $0 += $1 }
        }
    }
}
