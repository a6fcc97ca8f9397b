internal import CNats
import Foundation
import Synchronization

/// A connection to a NATS server (cnats `natsConnection`).
///
/// It reconnects by itself forever and buffers publishes meanwhile; it starts even when the
/// server is not up yet (``isConnected`` tells). Requests use one shared reply subscription, so a
/// request costs no thread and no subscription of its own, and their replies are taken on cnats'
/// reader thread (``natsReplyFilter``), a thread switch sooner than a subscription's delivery.
///
/// `@unchecked Sendable`: cnats connections are thread-safe; the Swift state is behind `Mutex`es.
public final class NatsConnection: @unchecked Sendable {
    public struct Configuration: Sendable {
        /// `nats://host:port`, or several separated by commas.
        public var url: String
        /// The client name the server shows for this connection.
        public var name: String
        /// Time between reconnect attempts. Default 250 ms.
        public var reconnectWait: Duration
        /// Default timeout of ``request(_:payload:headers:timeout:)``. Default 5 s.
        public var requestTimeout: Duration

        public init(
            url: String,
            name: String,
            reconnectWait: Duration = .milliseconds(250),
            requestTimeout: Duration = .seconds(5)
        ) {
            self.url = url
            self.name = name
            self.reconnectWait = reconnectWait
            self.requestTimeout = requestTimeout
        }
    }

    /// What happened to the connection, for logging.
    public enum Event: Sendable, Equatable {
        case connected
        case disconnected
        case reconnected
        case closed
        case asyncError(subject: String?, message: String)
    }

    let raw: OpaquePointer
    public let configuration: Configuration
    private let callbacks: ConnectionCallbacks
    private let replies: NatsSubscription
    var pendingRequests: PendingRequests { callbacks.pendingRequests }
    private let nextRequestID = Atomic<UInt64>(0)

    /// Connection events from now on; each call gives its reader its own stream.
    public var events: AsyncStream<Event> { callbacks.makeEvents() }

    private static let libraryOpen: Void = {
        _ = nats_Open(-1)
        // Deliver all subscriptions' messages from a small shared pool instead of a thread each.
        _ = nats_SetMessageDeliveryPoolSize(4)
    }()

    private init(raw: OpaquePointer, configuration: Configuration, callbacks: ConnectionCallbacks) throws {
        self.raw = raw
        self.configuration = configuration
        self.callbacks = callbacks
        // The filter's context is the callbacks' (retained until cnats' last callback).
        natsConn_setFilterWithClosure(raw, natsReplyFilter, Unmanaged.passUnretained(callbacks).toOpaque())
        do {
            // The server's interest in the replies; the filter takes them before this would.
            self.replies = try NatsSubscription(
                connection: raw,
                subject: callbacks.pendingRequests.inbox + "*",
                queue: nil,
                handler: { _ in }
            )
        } catch {
            // The closed callback releases `callbacks`.
            natsConnection_Destroy(raw)
            throw error
        }
    }

    /// Messages on the reply subject that went on to its subscription (nothing the filter took).
    var repliesPassedOn: Int64 { replies.delivered }

    /// Connects. Returns as soon as the first attempt is over — when the server is not up yet,
    /// cnats keeps trying in the background (``isConnected`` tells). The handshake blocks, so it
    /// runs on a short-lived thread of its own.
    public static func connect(_ configuration: Configuration) async throws -> NatsConnection {
        try await withCheckedThrowingContinuation { continuation in
            Thread {
                continuation.resume(with: Result { try connectBlocking(configuration) })
            }.start()
        }
    }

    private static func connectBlocking(_ configuration: Configuration) throws -> NatsConnection {
        _ = libraryOpen
        var options: OpaquePointer?
        var status = natsOptions_Create(&options)
        guard status == NATS_OK, let options else { throw NatsError(status: status) }
        defer { natsOptions_Destroy(options) }
        let callbacks = ConnectionCallbacks()
        let context = Unmanaged.passRetained(callbacks).toOpaque()
        let reconnectWait =
            Int64(configuration.reconnectWait.components.seconds * 1000)
            + configuration.reconnectWait.components.attoseconds / 1_000_000_000_000_000
        for step in [
            { natsOptions_SetURL(options, configuration.url) },
            { natsOptions_SetName(options, configuration.name) },
            { natsOptions_SetMaxReconnect(options, -1) },
            { natsOptions_SetReconnectWait(options, reconnectWait) },
            { natsOptions_SetTimeout(options, 2000) },
            { natsOptions_UseGlobalMessageDelivery(options, true) },
            // Write each publish from the caller's thread: waking cnats' flusher thread for every
            // message costs a thread switch and most of a millisecond under load.
            { natsOptions_SetSendAsap(options, true) },
            { natsOptions_SetRetryOnFailedConnect(options, true, natsConnectedCallback, context) },
            { natsOptions_SetDisconnectedCB(options, natsDisconnectedCallback, context) },
            { natsOptions_SetReconnectedCB(options, natsReconnectedCallback, context) },
            { natsOptions_SetClosedCB(options, natsClosedCallback, context) },
            { natsOptions_SetErrorHandler(options, natsErrorCallback, context) },
        ] where status == NATS_OK {
            status = step()
        }
        var connection: OpaquePointer?
        if status == NATS_OK { status = natsConnection_Connect(&connection, options) }
        guard status == NATS_OK || status == NATS_NOT_YET_CONNECTED, let connection else {
            Unmanaged.passUnretained(callbacks).release()
            throw NatsError(status: status)
        }
        if status == NATS_OK { callbacks.emit(.connected) }
        return try NatsConnection(raw: connection, configuration: configuration, callbacks: callbacks)
    }

    /// Closes the connection if still open. `callbacks` is released by the closed callback, which
    /// cnats calls last, on its own thread, possibly after this returns.
    deinit {
        natsConnection_Destroy(raw)
    }

    /// True while connected to a server.
    public var isConnected: Bool { natsConnection_Status(raw) == NATS_CONN_STATUS_CONNECTED }

    /// Publishes a message (buffered; sent by cnats' flusher).
    public func publish(
        _ subject: String,
        payload: Data = Data(),
        headers: [String: String] = [:],
        replySubject: String? = nil
    ) throws {
        try withNatsMessage(subject: subject, reply: replySubject, headers: headers, payload: payload) { message in
            let status = natsConnection_PublishMsg(raw, message)
            guard status == NATS_OK else { throw NatsError(status: status) }
        }
    }

    /// Subscribes to `subject`; with a `queue`, each message goes to one member of the group.
    /// With a `limit`, at most that many messages wait to be taken; the oldest beyond it go to
    /// `onDrop` (called on cnats' delivery thread: keep it short).
    public func subscribe(
        _ subject: String,
        queue: String? = nil,
        limit: Int? = nil,
        onDrop: (@Sendable (NatsMessage) -> Void)? = nil
    ) throws -> NatsSubscription {
        try NatsSubscription(connection: raw, subject: subject, queue: queue, limit: limit, onDrop: onDrop)
    }

    /// Sends a request and waits for the first reply.
    ///
    /// - Throws: `NatsError.Code.timeout` after `timeout` (default: the configuration's),
    ///   `.noResponders` when nobody listens on `subject`.
    public func request(
        _ subject: String,
        payload: Data = Data(),
        headers: [String: String] = [:],
        timeout: Duration? = nil
    ) async throws -> NatsMessage {
        let id = nextRequestID.add(1, ordering: .relaxed).newValue
        let timeout = timeout ?? configuration.requestTimeout
        // No task or timer per request: one sweeper fails the requests whose time is up.
        let reply: NatsMessage = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<NatsMessage, any Error>) in
                if Task.isCancelled { return continuation.resume(throwing: CancellationError()) }
                self.pendingRequests.add(id, continuation, subject: subject, timeout: timeout)
                do {
                    try self.publish(
                        subject,
                        payload: payload,
                        headers: headers,
                        replySubject: self.pendingRequests.inbox + String(id)
                    )
                } catch {
                    self.pendingRequests.take(id)?.resume(throwing: error)
                }
            }
        } onCancel: {
            self.pendingRequests.take(id)?.resume(throwing: CancellationError())
        }
        if reply.status == 503 {
            throw NatsError(.noResponders, message: "no service listens on \(subject)")
        }
        return reply
    }

    /// Sends everything buffered and waits for the server to confirm.
    public func flush(timeout: Duration = .seconds(5)) async throws {
        let milliseconds = Int64(timeout.components.seconds * 1000)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            // natsConnection_FlushTimeout blocks; a short-lived thread keeps it off Swift's pool.
            Thread { [self] in
                let status = natsConnection_FlushTimeout(self.raw, milliseconds)
                if status == NATS_OK {
                    continuation.resume()
                } else {
                    continuation.resume(throwing: NatsError(status: status))
                }
            }.start()
        }
    }

    /// Drains every subscription (pending messages are still delivered), flushes, then closes.
    /// Returns once the connection is closed, or after `timeout`.
    public func drain(timeout: Duration = .seconds(5)) async {
        let milliseconds = Int64(timeout.components.seconds * 1000)
        if natsConnection_DrainTimeout(raw, milliseconds) != NATS_OK {
            natsConnection_Close(raw)
        }
        await callbacks.waitUntilClosed()
    }

    /// Closes at once, dropping anything buffered.
    public func close() async {
        natsConnection_Close(raw)
        await callbacks.waitUntilClosed()
    }
}

/// Requests waiting for their reply, by request number; a request's reply comes to
/// `inbox` + its number.
final class PendingRequests: Sendable {
    let inbox = "_INBOX." + UUID().uuidString.replacingOccurrences(of: "-", with: "") + "."
    private let inboxBytes: [CChar]

    private struct Waiting {
        var continuation: CheckedContinuation<NatsMessage, any Error>
        var deadline: ContinuousClock.Instant
        var subject: String
        var timeout: Duration
    }

    private let state = Mutex<(waiting: [UInt64: Waiting], sweeping: Bool)>(([:], false))

    init() { inboxBytes = Array(inbox.utf8CString.dropLast()) }

    /// The request number a reply to `subject` is for, if it is a reply to one of these requests.
    func requestID(replyingTo subject: UnsafePointer<CChar>) -> UInt64? {
        let isReply = inboxBytes.withUnsafeBufferPointer { strncmp(subject, $0.baseAddress!, $0.count) == 0 }
        return isReply ? UInt64(String(cString: subject + inboxBytes.count)) : nil
    }

    func add(
        _ id: UInt64,
        _ continuation: CheckedContinuation<NatsMessage, any Error>,
        subject: String,
        timeout: Duration
    ) {
        let waiting = Waiting(
            continuation: continuation,
            deadline: .now + timeout,
            subject: subject,
            timeout: timeout
        )
        let startSweeper = state.withLock { state in
            state.waiting[id] = waiting
            defer { state.sweeping = true }
            return !state.sweeping
        }
        if startSweeper { Task.detached { await self.sweep() } }
    }

    func take(_ id: UInt64) -> CheckedContinuation<NatsMessage, any Error>? {
        state.withLock { $0.waiting.removeValue(forKey: id)?.continuation }
    }

    /// Every 50 ms, fails the requests past their deadline; ends when none is left.
    private func sweep() async {
        while true {
            try? await Task.sleep(for: .milliseconds(50))
            let now = ContinuousClock.now
            let (expired, isIdle) = state.withLock { state -> ([Waiting], Bool) in
                let expired = state.waiting.filter { $0.value.deadline <= now }
                for id in expired.keys { state.waiting[id] = nil }
                if state.waiting.isEmpty { state.sweeping = false }
                return (Array(expired.values), state.waiting.isEmpty)
            }
            for request in expired {
                request.continuation.resume(
                    throwing: NatsError(.timeout, message: "no reply on \(request.subject) within \(request.timeout)")
                )
            }
            if isIdle { return }
        }
    }
}

/// The state cnats' connection callbacks write to.
///
/// `@unchecked Sendable`: its state is behind `Mutex`es; stream continuations are Sendable.
final class ConnectionCallbacks: @unchecked Sendable {
    let pendingRequests = PendingRequests()
    private typealias Reader = AsyncStream<NatsConnection.Event>.Continuation
    private let readers = Mutex<(isClosed: Bool, last: UInt64, readers: [UInt64: Reader])>((false, 0, [:]))
    private let closed = Mutex<(isClosed: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func makeEvents() -> AsyncStream<NatsConnection.Event> {
        let (events, continuation) = AsyncStream<NatsConnection.Event>.makeStream(bufferingPolicy: .bufferingNewest(64))
        let id = readers.withLock { state -> UInt64? in
            guard !state.isClosed else { return nil }
            state.last += 1
            state.readers[state.last] = continuation
            return state.last
        }
        guard let id else {
            continuation.finish()
            return events
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.readers.withLock { $0.readers.removeValue(forKey: id) }
        }
        return events
    }

    func emit(_ event: NatsConnection.Event) {
        let readers = self.readers.withLock { state in
            if event == .closed { state.isClosed = true }
            return Array(state.readers.values)
        }
        for reader in readers { reader.yield(event) }
        guard event == .closed else { return }
        let waiters = closed.withLock { state in
            state.isClosed = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        waiters.forEach { $0.resume() }
        for reader in readers { reader.finish() }
    }

    func waitUntilClosed() async {
        await withCheckedContinuation { continuation in
            let isClosed = closed.withLock { state in
                if !state.isClosed { state.waiters.append(continuation) }
                return state.isClosed
            }
            if isClosed { continuation.resume() }
        }
    }
}

private func callbacks(_ context: UnsafeMutableRawPointer?) -> ConnectionCallbacks? {
    context.map { Unmanaged<ConnectionCallbacks>.fromOpaque($0).takeUnretainedValue() }
}

private func natsConnectedCallback(_ connection: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    callbacks(context)?.emit(.connected)
}

private func natsDisconnectedCallback(_ connection: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    callbacks(context)?.emit(.disconnected)
}

private func natsReconnectedCallback(_ connection: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    callbacks(context)?.emit(.reconnected)
}

/// The last callback cnats makes for a connection: it also releases the retained context.
private func natsClosedCallback(_ connection: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    guard let context else { return }
    let callbacks = Unmanaged<ConnectionCallbacks>.fromOpaque(context).takeRetainedValue()
    callbacks.emit(.closed)
}

/// Runs on cnats' reader thread for every message the connection receives: takes the replies to
/// its requests and resumes their waiting tasks, instead of queueing them for a delivery thread
/// that would (one wake-up more on every request's path; 70-100 µs of an append's 0.8 ms round
/// trip to JetStream under load). Everything else goes on to its subscription.
private func natsReplyFilter(
    _ connection: OpaquePointer?,
    _ message: UnsafeMutablePointer<OpaquePointer?>?,
    _ context: UnsafeMutableRawPointer?
) {
    guard let message, let raw = message.pointee, let pending = callbacks(context)?.pendingRequests,
        let subject = natsMsg_GetSubject(raw), let id = pending.requestID(replyingTo: subject)
    else { return }
    message.pointee = nil
    let reply = NatsMessage(copying: raw)
    natsMsg_Destroy(raw)
    pending.take(id)?.resume(returning: reply)
}

private func natsErrorCallback(
    _ connection: OpaquePointer?,
    _ subscription: OpaquePointer?,
    _ status: natsStatus,
    _ context: UnsafeMutableRawPointer?
) {
    let subject = subscription.flatMap { natsSubscription_GetSubject($0) }.map { String(cString: $0) }
    callbacks(context)?.emit(.asyncError(subject: subject, message: String(cString: natsStatus_GetText(status))))
}
