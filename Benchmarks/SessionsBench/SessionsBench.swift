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
        abstract:
            "Raw JetStream publish-with-ack or publish → ordered-consumer delivery; appends → SSE subscribers; or appends → waitpoint long-polls (HdrHistogram)."
    )

    enum Mode: String, ExpressibleByArgument {
        /// Publish-with-ack throughput and latency, `concurrency` publishers.
        case publish
        /// Publish at `rate` per second; latency until an ordered consumer (what realtime's SSE
        /// feed uses) delivers each message.
        case delivery
        /// Append through realtime at `rate` while `subscribers` SSE streams follow the channel.
        case sse
        /// Waiters long-poll on every session's `.in` channel; one append each wakes them.
        case wait
    }

    @Option(help: "publish or delivery.") var mode = Mode.publish
    @Option(help: "Messages per second in delivery mode.") var rate = 500
    @Option(help: "NATS URL (publish, delivery; sse for the probe).") var nats: String?
    @Option(
        help:
            "sse with --nats: publishes per second of raw JetStream delivery measured alongside the appends, on a stream of its own — what the machine itself does over the same seconds."
    )
    var probeRate = 50
    @Option(help: "Realtime base URL (sse, wait).") var url: String?
    @Option(help: "Waitpoints base URL (wait).") var waitpointsUrl: String?
    @Option(help: "Comma-separated session friendlyIds (wait).") var sessions: String?
    @Option(help: "Waiters per session (wait).") var waiters = 10
    @Option(help: "Rounds (wait).") var rounds = 3
    @Option(help: "API key (sse, wait).") var apiKey: String?
    @Option(help: "Session friendlyId whose .out channel is used (sse).") var session: String?
    @Option(help: "SSE subscribers (sse).") var subscribers = 1
    @Option(help: "Realtime's pid, to report resident memory per idle subscriber (sse).") var serverPid: Int32?
    @Option(help: "Concurrent publishers (publish), or appending connections (sse).") var concurrency = 1
    @Option(help: "Measured seconds (after one second of warm-up).") var seconds = 10
    @Option(help: "Payload bytes.") var payload = 64
    @Flag(
        help:
            "Publish mode: each operation is the engine's work of an append with a part id (a direct get of the part's subject, a claim published there, then the record)."
    )
    var partClaims = false

    func run() async throws {
        if mode == .wait {
            guard let url, let waitpointsUrl, let apiKey, let sessions else {
                throw ValidationError("wait needs --url, --waitpoints-url, --api-key, --sessions")
            }
            let load = WaitLoad(
                realtimeURL: url,
                waitpointsURL: waitpointsUrl,
                apiKey: apiKey,
                sessions: sessions.split(separator: ",").map(String.init),
                waiters: waiters,
                rounds: rounds
            )
            return print(String(decoding: try JSONEncoder().encode(try await load.run()), as: UTF8.self))
        }
        if mode == .sse {
            guard let url, let apiKey, let session else {
                throw ValidationError("sse needs --url, --api-key, --session")
            }
            let load = SSELoad(
                url: url,
                apiKey: apiKey,
                session: session,
                subscribers: subscribers,
                rate: rate,
                writers: concurrency,
                seconds: seconds,
                serverPid: serverPid
            )
            guard let nats, probeRate > 0 else {
                return print(String(decoding: try JSONEncoder().encode(try await load.run()), as: UTF8.self))
            }
            // Both start with a second of warm-up (the load's is its subscribers' idle second).
            async let probe = onBenchStream(nats) { try await measureDelivery($0, stream: $1, rate: probeRate) }
            var result = try await load.run()
            for (key, value) in try await probe {
                result["probe" + key.prefix(1).uppercased() + key.dropFirst()] = value
            }
            return print(String(decoding: try JSONEncoder().encode(result), as: UTF8.self))
        }
        guard let nats else { throw ValidationError("\(mode.rawValue) needs --nats") }
        let result =
            mode == .delivery
            ? try await onBenchStream(nats) { try await measureDelivery($0, stream: $1, rate: rate) }
            : try await onBenchStream(nats) { try await measurePublish($0, stream: $1) }
        print(String(decoding: try JSONEncoder().encode(result), as: UTF8.self))
    }

    /// Runs `body` on a stream of its own (file storage, synced as the server is configured),
    /// deleted afterwards.
    func onBenchStream(
        _ nats: String,
        _ body: (JetStream, String) async throws -> [String: Double]
    ) async throws -> [String: Double] {
        let connection = try await NatsConnection.connect(.init(url: nats, name: "sessions-bench"))
        let jetStream = try JetStream(connection: connection)
        let stream = "BENCH_\(UUID().uuidString.prefix(8))"
        _ = try await jetStream.createOrUpdateStream(.init(name: stream, subjects: ["bench.\(stream).>"]))
        let result = try await body(jetStream, stream)
        try await jetStream.deleteStream(stream)
        await connection.close()
        return result
    }

    /// Publish-with-ack throughput and latency of `concurrency` publishers.
    func measurePublish(_ jetStream: JetStream, stream: String) async throws -> [String: Double] {
        let body = Data(repeating: UInt8(ascii: "x"), count: payload)
        // One subject per publisher with expected-last-subject-sequence, as realtime appends do.
        func measure(for duration: Duration) async throws -> (count: Int, histogram: Histogram<UInt64>) {
            let deadline = ContinuousClock.now + duration
            let round = UUID().uuidString.prefix(8)
            return try await withThrowingTaskGroup(of: Histogram<UInt64>.self) { group in
                for publisher in 0..<concurrency {
                    group.addTask {
                        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000)
                        let subject = "bench.\(stream).\(publisher)"
                        var last =
                            try await jetStream.directGet(stream: stream, .lastBySubject(subject))?.metadata?
                            .streamSequence ?? 0
                        var operation = 0
                        while ContinuousClock.now < deadline {
                            let start = ContinuousClock.now
                            if partClaims {
                                operation += 1
                                let part = "bench.\(stream).parts.\(round).\(publisher).\(operation)"
                                _ = try await jetStream.directGet(stream: stream, .lastBySubject(part))
                                _ = try await jetStream.publish(part, payload: body, expectedLastSubjectSequence: 0)
                            }
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
        return [
            "opsPerSecond": Double(count) / Double(seconds),
            "p50Ms": Double(histogram.valueAtPercentile(50)) / 1000,
            "p99Ms": Double(histogram.valueAtPercentile(99)) / 1000,
        ]
    }

    /// Publishes at `rate` for `seconds` (after a second of warm-up) while an ordered consumer
    /// reads the subject; each payload carries the moment to measure it from (``Pacing``).
    func measureDelivery(_ jetStream: JetStream, stream: String, rate: Int) async throws -> [String: Double] {
        let subject = "bench.\(stream).delivery"
        let subscription = try jetStream.orderedConsumer(stream: stream, subject: subject, deliver: .all)
        let warmUp = rate
        let total = warmUp + rate * seconds
        let receiver = Task {
            var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000)
            var received = 0
            for await message in subscription {
                let sent = message.payload.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
                received += 1
                if received > warmUp { _ = histogram.record((DispatchTime.now().uptimeNanoseconds - sent) / 1000) }
                if received == total { break }
            }
            return (received, histogram)
        }
        let pacing = Pacing(rate: rate)
        var previousAcked: UInt64 = 0
        for n in 1...total {
            var sent = try await pacing.turn(n, previousAnswered: previousAcked)
            let body = Data(bytes: &sent, count: 8) + Data(repeating: UInt8(ascii: "x"), count: max(0, payload - 8))
            _ = try await jetStream.publish(subject, payload: body)
            previousAcked = DispatchTime.now().uptimeNanoseconds
        }
        let deadline = Task {
            try await Task.sleep(for: .seconds(5))
            subscription.unsubscribe()
        }
        let (received, histogram) = await receiver.value
        deadline.cancel()
        subscription.unsubscribe()
        return [
            "rate": Double(rate), "messages": Double(rate * seconds), "received": Double(received - warmUp),
            "p50Ms": Double(histogram.valueAtPercentile(50)) / 1000,
            "p99Ms": Double(histogram.valueAtPercentile(99)) / 1000,
            "maxMs": Double(histogram.max) / 1000,
        ]
    }
}
