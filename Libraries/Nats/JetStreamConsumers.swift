internal import CNats
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

extension JetStream {
    /// Where a consumer starts in the stream.
    public enum DeliverPolicy: Sendable, Equatable {
        case all
        case new
        case last
        /// From this stream sequence on (inclusive).
        case startSequence(UInt64)
    }

    /// An ordered consumer: an ephemeral, flow-controlled push consumer that delivers the
    /// stream's messages on `subject` in order, without gaps or repeats, recreating itself after
    /// a hiccup. Nothing to acknowledge. Messages carry ``NatsMessage/metadata``.
    public func orderedConsumer(
        stream: String,
        subject: String,
        deliver: DeliverPolicy = .all
    ) throws
        -> NatsSubscription
    {
        let (messages, continuation) = AsyncStream<NatsMessage>.makeStream()
        let box = SubscriptionBox(continuation: continuation, convert: NatsMessage.init(copyingWithMetadata:))
        let context = Unmanaged.passRetained(box).toOpaque()
        var options = jsSubOptions()
        jsSubOptions_Init(&options)
        options.Ordered = true
        options.Config.DeliverPolicy = deliver.cValue
        if case .startSequence(let sequence) = deliver { options.Config.OptStartSeq = sequence }
        var subscription: OpaquePointer?
        var errorCode = jsErrCode(0)
        var status = stream.withCString { streamName in
            options.Stream = streamName
            return js_Subscribe(
                &subscription,
                self.context,
                subject,
                natsSubscriptionCallback,
                context,
                nil,
                &options,
                &errorCode
            )
        }
        if status == NATS_OK, let subscription {
            status = natsSubscription_SetOnCompleteCB(subscription, natsSubscriptionCompleted, context)
        }
        guard status == NATS_OK, let subscription else {
            if let subscription { natsSubscription_Destroy(subscription) }
            Unmanaged<SubscriptionBox>.fromOpaque(context).release()
            var error = NatsError(status: status)
            if errorCode.rawValue != 0 { error.jetStreamCode = Int(errorCode.rawValue) }
            throw error
        }
        return NatsSubscription(raw: subscription, messages: messages)
    }

    /// Creates (or updates) a durable pull consumer with explicit acks and binds to it.
    ///
    /// The consumer is created through the JetStream API and only bound by cnats, so it stays on
    /// the server when this process unsubscribes or dies: the next instance resumes after the
    /// last acknowledged message.
    ///
    /// - Parameters:
    ///   - durable: the consumer's name; all instances using it share its messages.
    ///   - filterSubject: the subjects it reads.
    ///   - ackWait: unacknowledged messages are delivered again after this. Default 30 s.
    ///   - maxDeliver: give up on a message after this many deliveries; -1 never. Default -1.
    ///   - onlyNew: when the consumer is first created, start after the stream's last message
    ///     instead of at its first. Default false.
    public func pullConsumer(
        stream: String,
        durable: String,
        filterSubject: String,
        ackWait: Duration = .seconds(30),
        maxDeliver: Int = -1,
        onlyNew: Bool = false
    ) async throws -> PullConsumer {
        let request = ConsumerCreateRequest(
            streamName: stream,
            config: .init(
                durableName: durable,
                filterSubject: filterSubject,
                ackWait: ackWait.nanoseconds,
                maxDeliver: maxDeliver,
                deliverPolicy: onlyNew ? "new" : "all"
            )
        )
        let consumer: ConsumerCreated = try await api("$JS.API.CONSUMER.CREATE.\(stream).\(durable)", request)
        return try PullConsumer(jetStream: self, stream: stream, durable: durable, created: consumer.created)
    }
}

extension JetStream {
    /// JetStream's `err_code` for "stream not found".
    public static let streamNotFound = 10059

    /// ``pullConsumer(stream:durable:filterSubject:ackWait:maxDeliver:onlyNew:)`` on a stream
    /// another service makes: until it exists, looks again every second (saying so once). Nil
    /// when cancelled or shut down first.
    public func pullConsumerOnceStreamExists(
        stream: String,
        durable: String,
        filterSubject: String,
        onlyNew: Bool,
        logger: Logger
    ) async -> PullConsumer? {
        var toldWaiting = false
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                return try await pullConsumer(
                    stream: stream,
                    durable: durable,
                    filterSubject: filterSubject,
                    onlyNew: onlyNew
                )
            } catch let error as NatsError where error.jetStreamCode == Self.streamNotFound {
                // The service that makes the stream has not started yet; nothing is wrong meanwhile.
                if !toldWaiting {
                    logger.notice(
                        "Waiting for the JetStream stream to be made.",
                        metadata: ["nats.stream": "\(stream)", "nats.consumer": "\(durable)"]
                    )
                    toldWaiting = true
                }
            } catch {
                logger.warning(
                    "Could not make a durable JetStream consumer; retrying.",
                    metadata: ["nats.stream": "\(stream)", "nats.consumer": "\(durable)", "error": "\(error)"]
                )
            }
            try? await Task.sleep(for: .seconds(1))
        }
        return nil
    }
}

extension JetStream {
    /// Reads a durable consumer until cancelled or shut down gracefully, handing each fetched
    /// batch to `handle` (which acknowledges the messages). The stream may be made by another
    /// service later. When a fetch fails, the consumer is made again (idempotent while it is
    /// still there); when that yields a new one (it was deleted), `recreated` runs first.
    ///
    /// Graceful shutdown stops intake and lets the fetched batch finish: cancelling it would
    /// strand the messages of a fetch in flight until the server's ack wait redelivers them.
    public func consumeDurably(
        stream: String,
        durable: String,
        filterSubject: String,
        onlyNew: Bool,
        batch: Int,
        logger: Logger,
        recreated: @Sendable () async -> Void = {},
        handle: @Sendable ([AckableMessage]) async -> Void
    ) async {
        func connect() async -> PullConsumer? {
            await pullConsumerOnceStreamExists(
                stream: stream,
                durable: durable,
                filterSubject: filterSubject,
                onlyNew: onlyNew,
                logger: logger
            )
        }
        guard var consumer = await connect() else { return }
        defer { consumer.stop() }
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let messages: [AckableMessage]
            do {
                messages = try await consumer.fetch(batch: batch, timeout: .seconds(1))
            } catch {
                if Task.isCancelled { break }
                logger.warning(
                    "Fetching from a durable JetStream consumer failed; subscribing again.",
                    metadata: ["nats.consumer": "\(durable)", "error": "\(error)"]
                )
                try? await Task.sleep(for: .seconds(1))
                consumer.stop()
                guard let again = await connect() else { return }
                if again.created != consumer.created {
                    logger.warning(
                        "A durable JetStream consumer was made anew.",
                        metadata: ["nats.consumer": "\(durable)"]
                    )
                    await recreated()
                }
                consumer = again
                continue
            }
            await handle(messages)
        }
    }
}

private struct ConsumerCreateRequest: Encodable {
    struct Config: Encodable {
        var durableName: String
        var filterSubject: String
        var ackWait: Int64
        var maxDeliver: Int
        var deliverPolicy: String
        var ackPolicy = "explicit"

        enum CodingKeys: String, CodingKey {
            case durableName = "durable_name"
            case filterSubject = "filter_subject"
            case ackWait = "ack_wait"
            case maxDeliver = "max_deliver"
            case ackPolicy = "ack_policy"
            case deliverPolicy = "deliver_policy"
        }
    }

    var streamName: String
    var config: Config

    enum CodingKeys: String, CodingKey {
        case streamName = "stream_name"
        case config
    }
}

private struct ConsumerCreated: Decodable {
    var name: String
    var created: String
}

extension JetStream.DeliverPolicy {
    var cValue: jsDeliverPolicy {
        switch self {
        case .all: js_DeliverAll
        case .new: js_DeliverNew
        case .last: js_DeliverLast
        case .startSequence: js_DeliverByStartSequence
        }
    }
}

extension NatsMessage {
    /// Copies a message read from a stream through a consumer, with where it sits in the stream.
    init(copyingWithMetadata message: OpaquePointer) {
        self.init(copying: message)
        metadata = JetStreamMetadata(reading: message)
    }
}

extension JetStreamMetadata {
    init?(reading message: OpaquePointer) {
        var metadata: UnsafeMutablePointer<jsMsgMetaData>?
        guard natsMsg_GetMetaData(&metadata, message) == NATS_OK, let metadata else { return nil }
        defer { jsMsgMetaData_Destroy(metadata) }
        let value = metadata.pointee
        self.init(
            stream: value.Stream.map { String(cString: $0) } ?? "",
            streamSequence: value.Sequence.Stream,
            // Whole milliseconds, as a direct get's `Nats-Time-Stamp` is read: a record read live
            // and read again later carries one time.
            timestamp: Date(timeIntervalSince1970: Double(value.Timestamp / 1_000_000) / 1000),
            deliveries: value.NumDelivered,
            pending: value.NumPending
        )
    }
}

/// A durable pull consumer: fetch a batch, handle each message, then acknowledge it.
///
/// It keeps one pull request standing on the server for up to `budget` messages (topped up as
/// fetches take them), so a record that comes alone costs the server one delivery and one ack:
/// cnats' `Fetch` sent a pull request, and got back an end-of-request status, for every fetch —
/// one per record when records trickle in (about a seventh of nats-server's CPU for them).
/// Messages arrive on an inbox of this consumer and wait in it until fetched.
public final class PullConsumer: Sendable {
    /// When the server made the durable consumer (its RFC 3339 text): another value for the same
    /// name means it was deleted and made again, starting from its deliver policy.
    public let created: String
    private let connection: NatsConnection
    private let nextSubject: String
    private let inboxSubject: String
    private let subscription: NatsSubscription
    private let inbox: Inbox
    private let watcher: Task<Void, Never>
    /// How long a standing request lives, and how often the server says it is still there.
    static let expires = Duration.seconds(30)
    static let heartbeat = Duration.seconds(2)

    init(jetStream: JetStream, stream: String, durable: String, created: String, budget: Int = 64) throws {
        let connection = jetStream.connection
        let inbox = Inbox(connection: connection, budget: budget)
        self.created = created
        self.connection = connection
        self.nextSubject = "$JS.API.CONSUMER.MSG.NEXT.\(stream).\(durable)"
        self.inboxSubject = "_INBOX." + UUID().uuidString.replacingOccurrences(of: "-", with: "")
        self.inbox = inbox
        self.subscription = try NatsSubscription(
            connection: connection.raw,
            subject: inboxSubject,
            queue: nil,
            handler: { inbox.received($0) },
            readsMetadata: true
        )
        let events = connection.events
        // Wakes a fetch whose time is up, and notices a standing request the server dropped: at
        // once after a reconnect, or when three heartbeats went missing.
        self.watcher = Task {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    for await event in events where event == .reconnected { inbox.requestsLost() }
                }
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(100))
                    inbox.tick()
                }
                group.cancelAll()
            }
        }
    }

    deinit { watcher.cancel() }

    /// Waits up to `timeout` for up to `batch` messages; returns an empty array when none came.
    /// One fetch at a time.
    public func fetch(batch: Int, timeout: Duration = .seconds(1)) async throws -> [AckableMessage] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (taken, pull) = try inbox.take(batch)
            if pull > 0 { try requestMore(pull) }
            if !taken.isEmpty || ContinuousClock.now >= deadline || Task.isCancelled { return taken }
            guard await inbox.wait(until: deadline) else { return [] }
        }
    }

    private func requestMore(_ count: Int) throws {
        let request =
            #"{"batch":\#(count),"expires":\#(Self.expires.nanoseconds),"idle_heartbeat":\#(Self.heartbeat.nanoseconds)}"#
        do {
            try connection.publish(nextSubject, payload: Data(request.utf8), replySubject: inboxSubject)
        } catch {
            inbox.notRequested(count)
            throw error
        }
    }

    /// Stops reading; the durable consumer stays on the server for the next instance. The
    /// messages received but not fetched go back to it at once (rather than after its ack
    /// wait); one still on its way when the inbox closes comes back after the ack wait.
    public func stop() {
        watcher.cancel()
        let unfetched = inbox.stop()
        // Unsubscribed first, so that the server does not hand them back to this inbox.
        subscription.unsubscribe()
        for message in unfetched { try? message.nak() }
    }

    /// Messages received and not yet fetched.
    var unfetched: Int { inbox.unfetched }

    /// What arrives on the consumer's inbox, and the fetch waiting for it.
    private final class Inbox: Sendable {
        private struct State {
            /// Received and not yet fetched.
            var ready: [AckableMessage] = []
            /// How many more messages the standing requests may bring.
            var requested = 0
            /// When the server last sent anything (a message or a heartbeat), or was asked.
            var heard = ContinuousClock.now
            var waiter: (continuation: CheckedContinuation<Bool, Never>, deadline: ContinuousClock.Instant)?
            /// Why the consumer can no longer be read (it was deleted, say).
            var failure: NatsError?
            var stopped = false

            /// The waiting fetch, to be resumed (outside the lock).
            mutating func wake() -> CheckedContinuation<Bool, Never>? {
                defer { waiter = nil }
                return waiter?.continuation
            }
        }

        private let state = Mutex(State())
        private let connection: NatsConnection
        /// How many messages may be asked for and not yet fetched.
        private let budget: Int

        init(connection: NatsConnection, budget: Int) {
            self.connection = connection
            self.budget = budget
        }

        /// Runs on cnats' delivery thread for each message on the inbox.
        func received(_ message: NatsMessage) {
            // A stored message carries its ack subject; the server's status messages carry none
            // (and a stored message may have a header named Status).
            let status = message.replySubject?.hasPrefix("$JS.ACK.") == true ? nil : message.status ?? 0
            let ackable = status == nil ? AckableMessage(message, connection: connection) : nil
            let (waiter, late) = state.withLock { state -> (CheckedContinuation<Bool, Never>?, AckableMessage?) in
                state.heard = .now
                let description = message.headers["Description"] ?? ""
                // A request ended (it expired; a leadership change, a server shutting down).
                let ended = status == 404 || status == 408 || (status == 409 && !Self.failsConsumer(description))
                switch status {
                case nil:
                    state.requested = max(0, state.requested - 1)
                    // Stopped while it was on its way: straight back to the other instances.
                    if state.stopped { return (nil, ackable) }
                    if let ackable { state.ready.append(ackable) }
                case 100:
                    return (nil, nil)  // a heartbeat: the request is still there
                case _ where ended:
                    // What it still owed will not come.
                    let owed = message.headers["Nats-Pending-Messages"].flatMap(Int.init) ?? state.requested
                    state.requested = max(0, state.requested - owed)
                case let status?:
                    // 503 (no such consumer), 409 (deleted, push based, a limit), 400: make it again.
                    state.failure = NatsError(
                        status == 503 ? .noResponders : .jetStream,
                        message: "JetStream answered a pull request with \(status) \(description)"
                    )
                }
                return (state.wake(), nil)
            }
            // The NAK is a publish: not under the lock.
            try? late?.nak()
            waiter?.resume(returning: true)
        }

        /// A 409 that no new request would get past: the consumer is gone or not a pull
        /// consumer, or the request breaks one of its limits ("Exceeded MaxWaiting", …).
        static func failsConsumer(_ description: String) -> Bool {
            ["Deleted", "push based", "Exceeded"].contains { description.contains($0) }
        }

        /// Up to `batch` received messages, and how many more to ask for: once no more than
        /// half the budget is on its way or waiting, enough to fill it, so that the stream
        /// never waits on a request.
        func take(_ batch: Int) throws -> (messages: [AckableMessage], pull: Int) {
            try state.withLock { state in
                if let failure = state.failure { throw failure }
                let taken = Array(state.ready.prefix(batch))
                state.ready.removeFirst(taken.count)
                let outstanding = state.requested + state.ready.count
                let pull = !state.stopped && outstanding <= budget / 2 ? budget - outstanding : 0
                if pull > 0 {
                    state.requested += pull
                    state.heard = .now
                }
                return (taken, pull)
            }
        }

        var unfetched: Int { state.withLock { $0.ready.count } }

        func notRequested(_ count: Int) { state.withLock { $0.requested = max(0, $0.requested - count) } }

        /// Waits for a message, a status or the deadline; at once when there is something to do
        /// (ask for more, say). False once stopped.
        func wait(until deadline: ContinuousClock.Instant) async -> Bool {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> Bool? in
                    precondition(state.waiter == nil, "one fetch at a time")
                    if state.stopped { return false }
                    guard state.ready.isEmpty && state.failure == nil && state.requested > budget / 2 else {
                        return true
                    }
                    state.waiter = (continuation, deadline)
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        }

        /// Wakes the fetch whose time is up; forgets requests not heard of for three heartbeats.
        func tick() {
            let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
                if state.requested > 0 && ContinuousClock.now - state.heard > PullConsumer.heartbeat * 3 {
                    state.requested = 0
                    return state.wake()
                }
                guard let waiter = state.waiter, waiter.deadline <= .now else { return nil }
                return state.wake()
            }
            waiter?.resume(returning: true)
        }

        /// The server no longer has this consumer's requests (they lived on the old connection):
        /// the waiting fetch asks again.
        func requestsLost() {
            let waiter = state.withLock { state in
                state.requested = 0
                return state.wake()
            }
            waiter?.resume(returning: true)
        }

        /// Marks the inbox stopped, ends the waiting fetch, and gives what was not fetched.
        func stop() -> [AckableMessage] {
            let (unfetched, waiter) = state.withLock { state in
                state.stopped = true
                defer { state.ready = [] }
                return (state.ready, state.wake())
            }
            waiter?.resume(returning: false)
            return unfetched
        }
    }
}

/// A message from a pull consumer that must be acknowledged (or it is delivered again).
public final class AckableMessage: Sendable {
    public let message: NatsMessage
    private let connection: NatsConnection

    init(_ message: NatsMessage, connection: NatsConnection) {
        self.message = message
        self.connection = connection
    }

    /// Done: the server will not deliver it again.
    public func ack() throws { try reply("+ACK") }

    /// Failed: deliver it again, after `delay` when given.
    public func nak(delay: Duration? = nil) throws {
        try reply(delay.map { #"-NAK {"delay":\#($0.nanoseconds)}"# } ?? "-NAK")
    }

    /// Never deliver it again, whatever happened.
    public func terminate() throws { try reply("+TERM") }

    private func reply(_ text: String) throws {
        guard let subject = message.replySubject else {
            throw NatsError(.jetStream, message: "a message without a reply subject cannot be acknowledged")
        }
        try connection.publish(subject, payload: Data(text.utf8))
    }
}
