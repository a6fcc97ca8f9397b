internal import CNats
import Foundation
import Logging
import NIOPosix
import ServiceLifecycle

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
        let box = SubscriptionBox(
            continuation: continuation,
            convert: { raw in
                var message = NatsMessage(copying: raw)
                message.metadata = JetStreamMetadata(reading: raw)
                return message
            }
        )
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
        var options = jsSubOptions()
        jsSubOptions_Init(&options)
        var subscription: OpaquePointer?
        var errorCode = jsErrCode(0)
        let status = stream.withCString { streamName in
            durable.withCString { consumerName in
                options.Stream = streamName
                options.Consumer = consumerName
                return js_PullSubscribe(&subscription, context, filterSubject, durable, nil, &options, &errorCode)
            }
        }
        guard status == NATS_OK, let subscription else {
            var error = NatsError(status: status)
            if errorCode.rawValue != 0 { error.jetStreamCode = Int(errorCode.rawValue) }
            throw error
        }
        return PullConsumer(raw: subscription, jetStream: self, created: consumer.created)
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
/// `Fetch` blocks in cnats, so it runs on this consumer's own thread. `@unchecked Sendable`:
/// cnats subscriptions are thread-safe, and fetches are serialised on the single thread.
public final class PullConsumer: @unchecked Sendable {
    private let raw: OpaquePointer
    private let thread: NIOThreadPool
    /// Keeps the JetStream context (which the subscription uses) alive.
    private let jetStream: JetStream
    /// When the server made the durable consumer (its RFC 3339 text): another value for the same
    /// name means it was deleted and made again, starting from its deliver policy.
    public let created: String

    init(raw: OpaquePointer, jetStream: JetStream, created: String) {
        self.raw = raw
        self.jetStream = jetStream
        self.created = created
        self.thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
    }

    deinit {
        natsSubscription_Destroy(raw)
        thread.shutdownGracefully { _ in }
    }

    /// Waits up to `timeout` for up to `batch` messages; returns an empty array when none came.
    public func fetch(batch: Int, timeout: Duration = .seconds(1)) async throws -> [AckableMessage] {
        let milliseconds = Int64(
            timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000
        )
        let pointers = try await thread.runIfActive { [self] () -> [UInt] in
            var list = natsMsgList()
            var errorCode = jsErrCode(0)
            let status = natsSubscription_Fetch(&list, self.raw, Int32(batch), milliseconds, &errorCode)
            if status == NATS_TIMEOUT { return [] }
            guard status == NATS_OK else {
                var error = NatsError(status: status)
                if errorCode.rawValue != 0 { error.jetStreamCode = Int(errorCode.rawValue) }
                throw error
            }
            // Take the messages out of the list before it is freed.
            var taken: [UInt] = []
            for index in 0..<Int(list.Count) {
                if let message = list.Msgs[index] { taken.append(UInt(bitPattern: Int(bitPattern: message))) }
                list.Msgs[index] = nil
            }
            natsMsgList_Destroy(&list)
            return taken
        }
        return pointers.map { AckableMessage(raw: OpaquePointer(bitPattern: $0)!, consumer: self) }
    }

    /// Stops the subscription; the durable consumer stays on the server for the next instance.
    public func stop() {
        natsSubscription_Unsubscribe(raw)
    }
}

/// A message from a pull consumer that must be acknowledged (or it is delivered again).
///
/// `@unchecked Sendable`: the message is read-only after creation, and cnats' ack calls are
/// thread-safe publishes.
public final class AckableMessage: @unchecked Sendable {
    private let raw: OpaquePointer
    private let consumer: PullConsumer
    public let message: NatsMessage

    init(raw: OpaquePointer, consumer: PullConsumer) {
        self.raw = raw
        self.consumer = consumer
        var message = NatsMessage(copying: raw)
        message.metadata = JetStreamMetadata(reading: raw)
        self.message = message
    }

    deinit { natsMsg_Destroy(raw) }

    /// Done: the server will not deliver it again.
    public func ack() throws { try check(natsMsg_Ack(raw, nil)) }

    /// Failed: deliver it again, after `delay` when given.
    public func nak(delay: Duration? = nil) throws {
        if let delay {
            try check(natsMsg_NakWithDelay(raw, delay.nanoseconds, nil))
        } else {
            try check(natsMsg_Nak(raw, nil))
        }
    }

    /// Still working on it: restart the ack timer.
    public func inProgress() throws { try check(natsMsg_InProgress(raw, nil)) }

    /// Never deliver it again, whatever happened.
    public func terminate() throws { try check(natsMsg_Term(raw, nil)) }

    private func check(_ status: natsStatus) throws {
        guard status == NATS_OK else { throw NatsError(status: status) }
    }
}
