internal import CNats
import Foundation

/// A subscription; iterate it to receive messages. Messages of one subscription arrive in order.
///
/// The stream ends when the subscription is unsubscribed, drained or its connection closes.
/// `@unchecked Sendable`: cnats subscriptions are thread-safe.
public final class NatsSubscription: AsyncSequence, @unchecked Sendable {
    public typealias Element = NatsMessage

    let raw: OpaquePointer
    private let messages: AsyncStream<NatsMessage>

    /// - Parameters:
    ///   - handler: when given, messages are passed to it on cnats' delivery thread instead of
    ///     the stream (for tiny, non-blocking routing work only).
    ///   - readsMetadata: messages of a JetStream consumer carry ``NatsMessage/metadata``.
    ///   - limit: when given, the stream holds at most this many messages not yet taken; a new
    ///     one then pushes out the oldest, which goes to `onDrop` (on cnats' delivery thread).
    init(
        connection: OpaquePointer,
        subject: String,
        queue: String?,
        handler: (@Sendable (NatsMessage) -> Void)? = nil,
        limit: Int? = nil,
        onDrop: (@Sendable (NatsMessage) -> Void)? = nil,
        readsMetadata: Bool = false
    ) throws {
        let (messages, continuation) = AsyncStream<NatsMessage>.makeStream(
            bufferingPolicy: limit.map { .bufferingNewest($0) } ?? .unbounded
        )
        let box = SubscriptionBox(
            continuation: continuation,
            handler: handler,
            onDrop: onDrop,
            convert: { raw in readsMetadata ? NatsMessage(copyingWithMetadata: raw) : NatsMessage(copying: raw) }
        )
        let context = Unmanaged.passRetained(box).toOpaque()
        var subscription: OpaquePointer?
        var status =
            if let queue {
                natsConnection_QueueSubscribe(
                    &subscription,
                    connection,
                    subject,
                    queue,
                    natsSubscriptionCallback,
                    context
                )
            } else {
                natsConnection_Subscribe(&subscription, connection, subject, natsSubscriptionCallback, context)
            }
        if status == NATS_OK, let subscription {
            status = natsSubscription_SetOnCompleteCB(subscription, natsSubscriptionCompleted, context)
            if status != NATS_OK { natsSubscription_Destroy(subscription) }
        }
        guard status == NATS_OK, let subscription else {
            Unmanaged<SubscriptionBox>.fromOpaque(context).release()
            throw NatsError(status: status)
        }
        self.raw = subscription
        self.messages = messages
    }

    /// Wraps a JetStream subscription made by cnats' `js_Subscribe`, whose callback and context
    /// were already set up with ``SubscriptionBox``.
    init(raw: OpaquePointer, messages: AsyncStream<NatsMessage>) {
        self.raw = raw
        self.messages = messages
    }

    deinit {
        natsSubscription_Unsubscribe(raw)
        natsSubscription_Destroy(raw)
    }

    public func makeAsyncIterator() -> AsyncStream<NatsMessage>.Iterator { messages.makeAsyncIterator() }

    /// Messages handed to this subscription's stream or handler so far.
    var delivered: Int64 {
        var count: Int64 = 0
        natsSubscription_GetDelivered(raw, &count)
        return count
    }

    /// Stops delivery at once; the stream ends.
    public func unsubscribe() {
        natsSubscription_Unsubscribe(raw)
    }

    /// Stops taking new messages but delivers those already received; then the stream ends.
    public func drain() {
        if natsSubscription_Drain(raw) != NATS_OK { natsSubscription_Unsubscribe(raw) }
    }
}

/// What a subscription's C callbacks write to: the stream, or the direct handler.
///
/// `@unchecked Sendable`: it holds only a Sendable continuation and a Sendable closure.
final class SubscriptionBox: @unchecked Sendable {
    let continuation: AsyncStream<NatsMessage>.Continuation
    let handler: (@Sendable (NatsMessage) -> Void)?
    /// Gets a message a bounded stream pushed out.
    let onDrop: (@Sendable (NatsMessage) -> Void)?
    /// Converts each raw message; JetStream subscriptions use it to read the message metadata.
    let convert: (OpaquePointer) -> NatsMessage

    init(
        continuation: AsyncStream<NatsMessage>.Continuation,
        handler: (@Sendable (NatsMessage) -> Void)? = nil,
        onDrop: (@Sendable (NatsMessage) -> Void)? = nil,
        convert: @escaping (OpaquePointer) -> NatsMessage = { NatsMessage(copying: $0) }
    ) {
        self.continuation = continuation
        self.handler = handler
        self.onDrop = onDrop
        self.convert = convert
    }
}

func natsSubscriptionCallback(
    _ connection: OpaquePointer?,
    _ subscription: OpaquePointer?,
    _ message: OpaquePointer?,
    _ context: UnsafeMutableRawPointer?
) {
    guard let message, let context else { return }
    defer { natsMsg_Destroy(message) }
    let box = Unmanaged<SubscriptionBox>.fromOpaque(context).takeUnretainedValue()
    let copy = box.convert(message)
    if let handler = box.handler {
        handler(copy)
    } else if case .dropped(let oldest) = box.continuation.yield(copy) {
        box.onDrop?(oldest)
    }
}

/// cnats calls this once the subscription is closed and its last callback has returned.
func natsSubscriptionCompleted(_ context: UnsafeMutableRawPointer?) {
    guard let context else { return }
    let box = Unmanaged<SubscriptionBox>.fromOpaque(context).takeRetainedValue()
    box.continuation.finish()
}
