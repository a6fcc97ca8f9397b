import ConnectionPool
import Foundation

/// An HTTP/1.1 client on libcurl, used for ClickHouse's HTTP interface and S2's REST API.
///
/// Requests lease a pooled easy handle, so connections to a server are reused. Streamed responses
/// (``stream(_:)``) run on a thread of their own for as long as the body lasts.
public final class HTTPClient: Sendable {
    public struct Configuration: Sendable {
        /// The most requests in flight at once (and easy handles kept). Default 8.
        public var poolSize: Int

        public init(poolSize: Int = 8) { self.poolSize = poolSize }
    }

    private let pool: ConnectionPool<CurlHandle>

    public init(configuration: Configuration = .init()) {
        self.pool = ConnectionPool(size: configuration.poolSize) { try CurlHandle() }
    }

    /// Sends `request` and reads the whole response.
    public func execute(_ request: HTTPRequest) async throws -> HTTPResponse {
        try await pool.withConnection { handle in
            try await pool.runBlocking {
                let receiver = BufferingReceiver()
                try handle.perform(request, receiver: receiver)
                return HTTPResponse(
                    status: receiver.status,
                    headers: receiver.headers,
                    body: receiver.body,
                    connectionReused: receiver.newConnections == 0
                )
            }
        }
    }

    /// Sends `request` and returns once the response head has arrived; the body follows as a
    /// stream of chunks. `request.timeout` bounds the wait for the head only.
    public func stream(_ request: HTTPRequest) async throws -> HTTPStreamingResponse {
        let (body, bodyContinuation) = AsyncThrowingStream<Data, any Error>.makeStream()
        let receiver = StreamingReceiver(body: bodyContinuation, headTimeout: request.timeout)
        bodyContinuation.onTermination = { _ in receiver.cancel() }
        let head = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                receiver.headContinuation = continuation
                let transfer = Thread {
                    do {
                        try CurlHandle().perform(request, streamingHeadTimeoutOnly: true, receiver: receiver)
                        receiver.complete(error: nil)
                    } catch {
                        receiver.complete(error: error)
                    }
                }
                transfer.name = "http-stream"
                transfer.start()
            }
        } onCancel: {
            receiver.cancel()
        }
        return HTTPStreamingResponse(status: head.status, headers: head.headers, body: body)
    }

    /// Closes every pooled handle. Call once, after the last request.
    public func close() async {
        await pool.close()
    }
}

/// Hands the head to the waiting caller and the body chunks to an `AsyncThrowingStream`.
///
/// `@unchecked Sendable`: `headContinuation` is set before the transfer thread starts and then
/// touched only on that thread.
private final class StreamingReceiver: ResponseReceiver, @unchecked Sendable {
    var headContinuation: CheckedContinuation<(status: Int, headers: HTTPHeaders), any Error>?
    private let body: AsyncThrowingStream<Data, any Error>.Continuation
    private let headDeadline: ContinuousClock.Instant

    init(body: AsyncThrowingStream<Data, any Error>.Continuation, headTimeout: Duration) {
        self.body = body
        self.headDeadline = .now + headTimeout
    }

    override var isCancelled: Bool {
        super.isCancelled || (!headComplete && ContinuousClock.now > headDeadline)
    }

    override func receiveHead() {
        headContinuation?.resume(returning: (status, headers))
        headContinuation = nil
    }

    override func receiveBody(_ chunk: Data) -> Bool {
        if case .terminated = body.yield(chunk) { return false }
        return true
    }

    func complete(error: (any Error)?) {
        if let continuation = headContinuation {
            headContinuation = nil
            if let error {
                let timedOut = !headComplete && ContinuousClock.now > headDeadline
                continuation.resume(
                    throwing: timedOut
                        ? HTTPClientError(.timeout, curlCode: 28, message: "no response head within the timeout")
                        : error
                )
            } else {
                continuation.resume(returning: (status, headers))
            }
        }
        body.finish(throwing: error)
    }
}
