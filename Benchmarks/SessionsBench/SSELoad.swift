import Foundation
import Histogram
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Appends to one channel at a fixed rate while many SSE subscribers follow it; measures append
/// sent → record received at every subscriber, and the append's own round trip (both from the
/// append's turn, see ``Pacing``). Subscribers share one event-loop thread and scan the stream's
/// bytes instead of decoding JSON, so the client costs little next to the server.
struct SSELoad {
    var url: String
    var apiKey: String
    var session: String
    var subscribers: Int
    var rate: Int
    /// Connections appending at once (each one append at a time), sharing the rate.
    var writers: Int
    var seconds: Int
    var serverPid: Int32?

    func run() async throws -> [String: Double] {
        try await BenchConnection.onOneEventLoop { try await measure(on: $0) }
    }

    private func measure(on group: MultiThreadedEventLoopGroup) async throws -> [String: Double] {
        let parts = try BenchConnection.hostAndPort(url)
        let path = "/realtime/v1/sessions/\(session)/out"
        let latencies = Mutex(Histogram<UInt64>(highestTrackableValue: 60_000_000))
        let appendLatencies = LatencyRecorder()
        let residentBefore = serverPid.flatMap(Self.residentKiB)
        var handlers: [SSESubscriber] = []
        for index in 0..<subscribers {
            let handler = SSESubscriber(host: "\(parts.host):\(parts.port)", path: path, apiKey: apiKey) { micros in
                latencies.withLock { _ = $0.record(micros) }
            }
            handlers.append(handler)
            try await BenchConnection.open(handler, host: parts.host, port: parts.port, on: group)
            // Attach in waves so the server's accept queue never overflows.
            if index % 100 == 99 { for handler in handlers { try await handler.connected.get() } }
        }
        for handler in handlers { try await handler.connected.get() }
        try await Task.sleep(for: .seconds(1))  // attached and idle
        let residentIdle = serverPid.flatMap(Self.residentKiB)

        let total = rate * seconds
        // Appends go out on the subscribers' event loop over keep-alive connections, one request
        // in flight on each: the load generator shares the machine, so it must cost little.
        let producers = max(1, writers)
        var appenders: [BenchConnection] = []
        for _ in 0..<producers {
            appenders.append(try await BenchConnection.connect(to: url, apiKey: apiKey, on: group))
        }
        let pacing = Pacing(rate: rate)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for (producer, appender) in appenders.enumerated() {
                tasks.addTask {
                    var previousAnswered: UInt64 = 0
                    for n in stride(from: producer, to: total, by: producers) {
                        let sent = try await pacing.turn(n, previousAnswered: previousAnswered)
                        let response = try await appender.request(.POST, path + "/append", body: String(sent)).get()
                        guard response.status == .ok else { throw LoadError("append answered \(response.status.code)") }
                        previousAnswered = response.arrived
                        appendLatencies.record((previousAnswered - sent) / 1000)
                    }
                }
            }
            try await tasks.waitForAll()
        }
        let appendSeconds = (ContinuousClock.now - pacing.start) / .seconds(1)
        for appender in appenders { appender.close() }
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline, handlers.contains(where: { $0.received < total && !$0.failed }) {
            try await Task.sleep(for: .milliseconds(50))
        }
        let complete = handlers.filter { $0.received == total && !$0.failed }.count
        for handler in handlers { handler.close() }
        let histogram = latencies.withLock { $0 }
        let appends = appendLatencies.histogram.withLock { $0 }
        var result: [String: Double] = [
            "subscribers": Double(subscribers), "appends": Double(total), "completeSubscribers": Double(complete),
            "received": Double(histogram.totalCount),
            "p50Ms": Double(histogram.valueAtPercentile(50)) / 1000,
            "p99Ms": Double(histogram.valueAtPercentile(99)) / 1000,
            "maxMs": Double(histogram.max) / 1000,
            "appendsPerSecond": Double(total) / appendSeconds,
            "appendP50Ms": Double(appends.valueAtPercentile(50)) / 1000,
            "appendP99Ms": Double(appends.valueAtPercentile(99)) / 1000,
        ]
        if let residentBefore, let residentIdle {
            result["idleKiBPerSubscriber"] = Double(residentIdle - residentBefore) / Double(subscribers)
        }
        return result
    }

    static func residentKiB(_ pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return nil }
        return Int(line.split(separator: " ").dropFirst().first ?? "")
    }
}

/// Sends at a fixed rate from one start, and what to measure each from: its turn when the writer
/// was still waiting for the previous answer then — so a stall counts for every send it held
/// back (no coordinated omission) — or else the moment it goes out.
struct Pacing {
    let rate: Int
    let start = ContinuousClock.now
    private let startNanos = DispatchTime.now().uptimeNanoseconds

    init(rate: Int) { self.rate = rate }

    /// Waits for send `n`'s turn; returns the moment (uptime nanoseconds) to measure it from.
    func turn(_ n: Int, previousAnswered: UInt64) async throws -> UInt64 {
        let offset = Int64(n) * 1_000_000_000 / Int64(rate)
        try await Task.sleep(until: start + .nanoseconds(offset))
        let turn = startNanos + UInt64(offset)
        return previousAnswered > turn ? turn : DispatchTime.now().uptimeNanoseconds
    }
}

/// A histogram that concurrent tasks record into.
final class LatencyRecorder: Sendable {
    let histogram = Mutex(Histogram<UInt64>(highestTrackableValue: 60_000_000))
    func record(_ micros: UInt64) { histogram.withLock { _ = $0.record(micros) } }
}

struct LoadError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One SSE subscription. Everything but `received`/`failed` reads is confined to its event loop.
///
/// `@unchecked Sendable`: state is touched on the channel's event loop only; the two counters
/// the producer side polls are atomics.
final class SSESubscriber: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let head: HTTPRequestHead
    private let record: (UInt64) -> Void
    private var pending: [UInt8] = []
    private var nextSeqNum = 0
    private var channel: (any Channel)?
    private let counts = Atomic<Int>(0)
    private let broken = Atomic<Bool>(false)
    private let connectedPromise = Mutex<EventLoopPromise<Void>?>(nil)
    private let connectedFuture = Mutex<EventLoopFuture<Void>?>(nil)

    init(host: String, path: String, apiKey: String, record: @escaping (UInt64) -> Void) {
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
        head.headers.add(name: "Host", value: host)
        head.headers.add(name: "Authorization", value: "Bearer \(apiKey)")
        head.headers.add(name: "Accept", value: "text/event-stream")
        head.headers.add(name: "Timeout-Seconds", value: "600")
        self.head = head
        self.record = record
    }

    var received: Int { counts.load(ordering: .relaxed) }
    var failed: Bool { broken.load(ordering: .relaxed) }
    var connected: EventLoopFuture<Void> { connectedFuture.withLock { $0! } }

    func handlerAdded(context: ChannelHandlerContext) {
        let promise = context.eventLoop.makePromise(of: Void.self)
        connectedPromise.withLock { $0 = promise }
        connectedFuture.withLock { $0 = promise.futureResult }
        channel = context.channel
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let response):
            if response.status == .ok {
                connectedPromise.withLock { $0?.succeed() }
            } else {
                fail(LoadError("subscribe answered \(response.status.code)"))
            }
        case .body(let buffer):
            pending.append(contentsOf: buffer.readableBytesView)
            scan()
        case .end:
            fail(LoadError("the stream ended"))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { fail(error) }

    func channelInactive(context: ChannelHandlerContext) { fail(LoadError("the connection closed")) }

    func close() { channel?.close(promise: nil) }

    private func fail(_ error: any Error) {
        if counts.load(ordering: .relaxed) == 0 { connectedPromise.withLock { $0?.fail(error) } }
        broken.store(true, ordering: .relaxed)
    }

    private static let seqNumKey = Array(#""seq_num":"#.utf8)
    /// `data` inside a record body, which the batch carries as an escaped JSON string.
    private static let dataKey = Array(#"\"data\":\""#.utf8)
    private static let eventEnd: [UInt8] = [10, 10]

    /// Takes every complete event out of `pending` and records each record's latency.
    private func scan() {
        let now = DispatchTime.now().uptimeNanoseconds
        var consumed = 0
        while let end = Self.find(Self.eventEnd, in: pending, from: consumed) {
            var cursor = consumed
            // Each record holds one of each key (in whatever order the server writes them).
            while let seqAt = Self.find(Self.seqNumKey, in: pending, from: cursor), seqAt < end,
                let dataAt = Self.find(Self.dataKey, in: pending, from: cursor), dataAt < end
            {
                let (seqNum, afterSeq) = Self.number(in: pending, at: seqAt + Self.seqNumKey.count)
                let (sent, afterData) = Self.number(in: pending, at: dataAt + Self.dataKey.count)
                if seqNum != UInt64(nextSeqNum) { broken.store(true, ordering: .relaxed) }
                nextSeqNum = Int(seqNum) + 1
                counts.add(1, ordering: .relaxed)
                if sent > 0 && sent <= now { record((now - sent) / 1000) }
                cursor = max(afterSeq, afterData)
            }
            consumed = end + 2
        }
        if consumed > 0 { pending.removeFirst(consumed) }
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        var index = start
        while index <= haystack.count - needle.count {
            if haystack[index] == needle[0] {
                var match = true
                for offset in 1..<needle.count where haystack[index + offset] != needle[offset] {
                    match = false
                    break
                }
                if match { return index }
            }
            index += 1
        }
        return nil
    }

    private static func number(in bytes: [UInt8], at start: Int) -> (UInt64, Int) {
        var value: UInt64 = 0
        var index = start
        while index < bytes.count, (48...57).contains(bytes[index]) {
            value = value &* 10 &+ UInt64(bytes[index] - 48)
            index += 1
        }
        return (value, index)
    }
}
