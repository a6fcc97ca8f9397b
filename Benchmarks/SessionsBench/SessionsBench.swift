import ArgumentParser
import Foundation
import Histogram
import Nats

/// Load generator for the raw-engine baselines of `make bench`: it measures the engine under
/// realtime with the same client library realtime uses, so a ratio compares the service with
/// the bare engine and nothing else. Prints one JSON line.
@main
struct SessionsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sessions-bench",
        abstract: "Raw JetStream publish-with-ack: throughput and latency percentiles (HdrHistogram)."
    )

    @Option(help: "NATS URL.") var nats: String
    @Option(help: "Concurrent publishers.") var concurrency = 1
    @Option(help: "Measured seconds (after one second of warm-up).") var seconds = 10
    @Option(help: "Payload bytes.") var payload = 64

    func run() async throws {
        let connection = try await NatsConnection.connect(.init(url: nats, name: "sessions-bench"))
        let jetStream = try JetStream(connection: connection)
        let stream = "BENCH_\(UUID().uuidString.prefix(8))"
        _ = try await jetStream.createOrUpdateStream(.init(name: stream, subjects: ["bench.\(stream).>"]))
        let body = Data(repeating: UInt8(ascii: "x"), count: payload)
        // One subject per publisher with expected-last-subject-sequence, as realtime appends do.
        func measure(for duration: Duration) async throws -> (count: Int, histogram: Histogram<UInt64>) {
            let deadline = ContinuousClock.now + duration
            return try await withThrowingTaskGroup(of: Histogram<UInt64>.self) { group in
                for publisher in 0..<concurrency {
                    group.addTask {
                        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000)
                        let subject = "bench.\(stream).\(publisher)"
                        var last =
                            try await jetStream.directGet(stream: stream, .lastBySubject(subject))?.metadata?
                            .streamSequence ?? 0
                        while ContinuousClock.now < deadline {
                            let start = ContinuousClock.now
                            let ack = try await jetStream.publish(
                                subject,
                                payload: body,
                                expectedLastSubjectSequence: last
                            )
                            last = ack.sequence
                            let elapsed = ContinuousClock.now - start
                            _ = histogram.record(
                                UInt64(elapsed.components.attoseconds / 1_000_000_000_000) + UInt64(
                                    elapsed.components.seconds
                                ) * 1_000_000
                            )
                        }
                        return histogram
                    }
                }
                var total = Histogram<UInt64>(highestTrackableValue: 60_000_000)
                for try await histogram in group { total.add(histogram) }
                return (Int(total.totalCount), total)
            }
        }
        _ = try await measure(for: .seconds(1))
        let (count, histogram) = try await measure(for: .seconds(seconds))
        try await jetStream.deleteStream(stream)
        await connection.close()
        let result: [String: Double] = [
            "opsPerSecond": Double(count) / Double(seconds),
            "p50Ms": Double(histogram.valueAtPercentile(50)) / 1000,
            "p99Ms": Double(histogram.valueAtPercentile(99)) / 1000,
        ]
        print(String(decoding: try JSONEncoder().encode(result), as: UTF8.self))
    }
}
