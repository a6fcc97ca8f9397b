import Contracts
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Synchronization

/// Writes one SSE response: batches of records in order, heartbeats, and an end after
/// `idleTimeout` without records, on graceful shutdown, or when the subscriber falls behind
/// (the client resumes with Last-Event-ID). The S2 style ends with `[DONE]` only when the read
/// is complete: its limit reached, its wait over, or — with `wait=0` — the tail reached; a read
/// cut short ends with an `error` event instead, which S2 clients retry from where they were.
struct EventStream: Sendable {
    enum Style: Sendable {
        /// `/realtime/v1/…`: `id:` is the batch's last sequence number.
        case sessions
        /// The S2 subset: `id: seq,count,bytes`, counted on from `sent` (what a resumed read's
        /// earlier connections sent), within `limits` in all; `[DONE]` at the end. Pings carry
        /// the tail, as S2's do (clients take `last + 1 == tail` as caught up); `tail` is the
        /// channel's when the read began.
        case s2(
            format: S2Routes.BodyFormat,
            limits: S2Routes.ReadLimits,
            sent: (count: Int, bytes: Int),
            tail: ChannelTail
        )
    }

    let hub: ChannelHub
    let pingInterval: Duration
    let idleTimeout: Duration
    let logger: Logger
    var style: Style = .sessions
    /// Ends, complete, once every record before this sequence number is sent: S2's `wait=0`,
    /// a read of what is there now that does not wait for more.
    var endBefore: UInt64?

    func run(_ channel: ChannelAddress, from start: UInt64, writer: inout any ResponseBodyWriter) async throws {
        let subscription = try hub.subscribe(channel, from: start)
        defer { subscription.cancel() }
        let clock = ContinuousClock()
        let deadlines = Mutex((ping: clock.now + pingInterval, idle: clock.now + idleTimeout))
        let ticker = Task {
            while !Task.isCancelled {
                let next = deadlines.withLock { min($0.ping, $0.idle) }
                try? await Task.sleep(until: max(next, clock.now + .milliseconds(10)), clock: clock)
                subscription.mailbox.wake()
            }
        }
        defer { ticker.cancel() }
        var counter = BatchWriter(style: style)
        // S2 clients learn they are caught up from a heartbeat's tail: one is due as soon as the
        // read reaches the tail it began with, rather than at the next interval. It goes out
        // when the subscriber is woken with nothing waiting, as every heartbeat does, so it
        // never claims a tail that records already waiting have passed.
        var caughtUp: UInt64? = nil
        if case .s2(_, _, _, let tail) = style { caughtUp = tail.nextSeqNum }
        try await withGracefulShutdownHandler {
            while !counter.isDone, subscription.nextSeqNum < endBefore ?? .max {
                if let tail = caughtUp, subscription.nextSeqNum >= tail {
                    deadlines.withLock { $0.ping = clock.now }
                    subscription.mailbox.wake()
                    caughtUp = nil
                }
                let records: [ChannelRecord]
                do {
                    guard let next = try await subscription.next() else { return }
                    records = next
                } catch let ending as Mailbox.Ending {
                    // Cut short (too slow, the upstream failed, shutdown): no `[DONE]`, which
                    // would tell an S2 client its read is complete; it resumes with Last-Event-ID.
                    if case .s2 = style { try await writer.write(Self.error(ending)) }
                    return
                }
                let now = clock.now
                if records.isEmpty {
                    let (ping, idle) = deadlines.withLock { ($0.ping, $0.idle) }
                    if now >= idle { break }
                    if now >= ping {
                        // Woken with nothing waiting: every record this instance has seen is sent.
                        try await writer.write(counter.ping(tail: subscription.nextSeqNum))
                        deadlines.withLock { $0.ping = now + pingInterval }
                    }
                    continue
                }
                if let batch = try counter.batch(records) { try await writer.write(batch) }
                deadlines.withLock { $0 = (now + pingInterval, now + idleTimeout) }
            }
            if case .s2 = style { try await writer.write(ByteBuffer(string: "data: [DONE]\n\n")) }
        } onGracefulShutdown: {
            subscription.mailbox.end(.shutdown)
        }
    }

    /// Formats batches and counts what was sent.
    struct BatchWriter {
        let style: Style
        var delivered = 0
        var bytes = 0
        /// The timestamp of the last record sent, or of the tail when the read began.
        var lastTimestamp: Int64 = 0
        /// A limit of an S2 read stopped it.
        private(set) var isDone = false

        init(style: Style) {
            self.style = style
            if case .s2(_, let limits, let sent, let tail) = style {
                (delivered, bytes, lastTimestamp) = (sent.0, sent.1, tail.timestamp)
                isDone = limits.take([], after: sent).reached
            }
        }

        /// The event for `records`, or nil when a limit leaves none of them to send.
        mutating func batch(_ records: [ChannelRecord]) throws -> ByteBuffer? {
            var buffer = ByteBuffer()
            switch style {
            case .sessions:
                buffer.writeString("event: batch\nid: \(records.last!.seqNum)\ndata: ")
                RecordJSON.writeBatch(records, to: &buffer)
                lastTimestamp = records.last!.timestamp
            case .s2(let format, let limits, _, _):
                let (records, reached) = limits.take(records, after: (delivered, bytes))
                isDone = reached
                guard let last = records.last else { return nil }
                lastTimestamp = last.timestamp
                delivered += records.count
                bytes += records.reduce(0) { $0 + $1.meteredBytes }
                buffer.writeString("event: batch\nid: \(records.last!.seqNum),\(delivered),\(bytes)\ndata: ")
                buffer.writeBytes(
                    try JSONEncoder.sessions.encode(
                        ["records": try records.map { try S2Routes.SequencedRecord($0, format: format) }]
                    )
                )
            }
            buffer.writeString("\n\n")
            return buffer
        }

        /// A heartbeat; in the S2 style with the tail: `next` with the last record's timestamp.
        func ping(tail next: UInt64) -> ByteBuffer {
            guard case .s2 = style else { return EventStream.ping() }
            let now = Date().epochMilliseconds
            return ByteBuffer(
                string:
                    "event: ping\ndata: {\"timestamp\":\(now),\"tail\":{\"seq_num\":\(next),\"timestamp\":\(lastTimestamp)}}\n\n"
            )
        }
    }

    /// S2's `error` event for a read cut short; S2 clients retry both codes.
    static func error(_ ending: Mailbox.Ending) -> ByteBuffer {
        let (code, message) =
            switch ending {
            case .tooSlow: ("unavailable", "The reader fell too far behind; read again from the last record received")
            case .upstreamFailed: ("unavailable", "The stream store failed; read again from the last record received")
            case .shutdown: ("server_draining", "The server is shutting down; read again from the last record received")
            }
        return ByteBuffer(string: "event: error\ndata: {\"code\":\"\(code)\",\"message\":\"\(message)\"}\n\n")
    }

    static func ping() -> ByteBuffer {
        ByteBuffer(string: "event: ping\ndata: {\"timestamp\":\(Int64(Date().timeIntervalSince1970 * 1000))}\n\n")
    }
}
