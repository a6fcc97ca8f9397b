import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A keep-alive HTTP/1.1 connection for the load generators: one request at a time, answered
/// with the whole response and the moment its last byte arrived. It runs on the caller's event
/// loop and costs little, since the load generators share the machine with the servers.
///
/// `@unchecked Sendable`: state is touched on the channel's event loop only.
final class BenchConnection: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    struct Response {
        var status: HTTPResponseStatus
        var body: ByteBuffer
        /// `DispatchTime` uptime nanoseconds at the end of the response.
        var arrived: UInt64
    }

    private let host: String
    private let apiKey: String
    private var context: ChannelHandlerContext?
    private var waiting: EventLoopPromise<Response>?
    private var response = Response(status: .ok, body: ByteBuffer(), arrived: 0)

    private init(host: String, apiKey: String) {
        self.host = host
        self.apiKey = apiKey
    }

    /// Connects to the host of `url` (`http://host:port`).
    static func connect(to url: String, apiKey: String, on group: any EventLoopGroup) async throws -> BenchConnection {
        let (host, port) = try hostAndPort(url)
        let connection = BenchConnection(host: "\(host):\(port)", apiKey: apiKey)
        try await open(connection, host: host, port: port, on: group)
        return connection
    }

    static func hostAndPort(_ url: String) throws -> (host: String, port: Int) {
        guard let components = URLComponents(string: url), let host = components.host else {
            throw LoadError("not a URL: \(url)")
        }
        return (host, components.port ?? 80)
    }

    /// Connects an HTTP/1.1 client pipeline that ends in `handler`.
    static func open(
        _ handler: some ChannelInboundHandler & Sendable,
        host: String,
        port: Int,
        on group: any EventLoopGroup
    ) async throws {
        _ = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: host, port: port).get()
    }

    /// Runs `body` with a one-thread event-loop group, shut down afterwards whatever happens.
    static func onOneEventLoop<Result>(
        _ body: (MultiThreadedEventLoopGroup) async throws -> Result
    ) async throws -> Result {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let result = try await body(group)
            try await group.shutdownGracefully()
            return result
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    /// Sends one request (a text body as `text/plain`, a JSON one as `application/json`).
    func request(
        _ method: HTTPMethod,
        _ path: String,
        body: String? = nil,
        json: Bool = false
    )
        -> EventLoopFuture<Response>
    {
        guard let eventLoop = context?.eventLoop else { fatalError("request before the connection was set up") }
        return eventLoop.flatSubmit {
            let context = self.context!
            let promise = context.eventLoop.makePromise(of: Response.self)
            guard self.waiting == nil else {
                promise.fail(LoadError("one request at a time per connection"))
                return promise.futureResult
            }
            self.waiting = promise
            self.response = Response(status: .ok, body: ByteBuffer(), arrived: 0)
            var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
            head.headers.add(name: "Host", value: self.host)
            head.headers.add(name: "Authorization", value: "Bearer \(self.apiKey)")
            if let body {
                head.headers.add(name: "Content-Type", value: json ? "application/json" : "text/plain")
                head.headers.add(name: "Content-Length", value: String(body.utf8.count))
            }
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            if let body {
                context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
            }
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            return promise.futureResult
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): response.status = head.status
        case .body(var chunk): response.body.writeBuffer(&chunk)
        case .end:
            response.arrived = DispatchTime.now().uptimeNanoseconds
            let promise = waiting
            waiting = nil
            promise?.succeed(response)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        waiting?.fail(error)
        waiting = nil
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        waiting?.fail(LoadError("the connection closed"))
        waiting = nil
    }

    func close() { context?.channel.close(promise: nil) }
}
