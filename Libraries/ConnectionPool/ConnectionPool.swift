import NIOPosix
import Synchronization

/// A connection owned by a ``ConnectionPool``. A broken one is closed instead of being handed out again.
public protocol PooledConnection: AnyObject, Sendable {
    /// True once the connection can no longer be used (its socket failed or the server closed it).
    var isBroken: Bool { get }
}

/// A small pool of exclusively leased connections to a C client library, with its own threads for
/// the blocking calls those libraries make.
///
/// libpq, hiredis and libcurl handles must not be used from two threads at once, and their calls
/// block: a lease gives one task a connection for the length of a closure, and ``runBlocking(_:)``
/// runs the blocking calls on this pool's threads — one per connection, so a busy pool never
/// starves Swift's cooperative threads or another pool. Connections are opened lazily, up to
/// `size`; when all are leased, callers wait in FIFO order.
public final class ConnectionPool<Connection: PooledConnection>: Sendable {
    public typealias Factory = @Sendable () throws -> Connection

    private struct State {
        var idle: [Connection] = []
        /// Connections created, being created, or leased.
        var open = 0
        /// Waiting callers, resumed with a connection or with `nil`, meaning "open a new one".
        var waiters: [CheckedContinuation<Connection?, any Error>] = []
        var isClosed = false
    }

    /// Errors of the pool itself (not of its connections).
    public struct ClosedError: Error, CustomStringConvertible {
        public var description: String { "the connection pool is closed" }
    }

    public let size: Int
    private let threadPool: NIOThreadPool
    private let factory: Factory
    private let state = Mutex(State())

    /// - Parameters:
    ///   - size: the most connections open at once, and the number of threads for blocking calls.
    ///   - factory: opens one connection; it runs on the pool's threads and may block.
    public init(size: Int, factory: @escaping Factory) {
        precondition(size > 0, "a connection pool needs at least one connection")
        self.size = size
        self.factory = factory
        self.threadPool = NIOThreadPool(numberOfThreads: size)
        threadPool.start()
    }

    /// Leases a connection for the duration of `body`, then returns it (or drops it when broken).
    public func withConnection<Result>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: (Connection) async throws -> Result
    ) async throws -> Result {
        let connection = try await lease()
        defer { release(connection) }
        return try await body(connection)
    }

    /// Runs a blocking call on the pool's threads. Call it only while holding a lease.
    public func runBlocking<Result: Sendable>(_ work: @escaping @Sendable () throws -> Result) async throws -> Result {
        try await threadPool.runIfActive(work)
    }

    /// Fails every waiter, closes idle connections and stops the threads. Leased connections are
    /// closed when they come back.
    public func close() async {
        let waiters = state.withLock { state in
            state.isClosed = true
            state.idle.removeAll()
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(throwing: ClosedError()) }
        try? await threadPool.shutdownGracefully()
    }

    private enum LeaseAction {
        case use(Connection)
        case open
        case wait
        case fail
    }

    private func lease() async throws -> Connection {
        let reused: Connection? = try await withCheckedThrowingContinuation { continuation in
            let action = state.withLock { state -> LeaseAction in
                if state.isClosed { return .fail }
                if let connection = state.idle.popLast() { return .use(connection) }
                if state.open < size {
                    state.open += 1
                    return .open
                }
                state.waiters.append(continuation)
                return .wait
            }
            switch action {
            case .use(let connection): continuation.resume(returning: connection)
            case .open: continuation.resume(returning: nil)
            case .wait: break
            case .fail: continuation.resume(throwing: ClosedError())
            }
        }
        if let reused { return reused }
        do {
            let factory = self.factory
            return try await threadPool.runIfActive { try factory() }
        } catch {
            giveUpSlot()
            throw error
        }
    }

    private func release(_ connection: Connection) {
        let broken = connection.isBroken
        let waiter = state.withLock { state -> (CheckedContinuation<Connection?, any Error>, Connection?)? in
            if state.isClosed {
                state.open -= 1
                return nil
            }
            if broken {
                state.open -= 1
                guard !state.waiters.isEmpty else { return nil }
                state.open += 1
                return (state.waiters.removeFirst(), nil)
            }
            guard !state.waiters.isEmpty else {
                state.idle.append(connection)
                return nil
            }
            return (state.waiters.removeFirst(), connection)
        }
        if let (continuation, connection) = waiter { continuation.resume(returning: connection) }
    }

    /// A connection could not be opened: free its slot, and let the next waiter try instead.
    private func giveUpSlot() {
        let waiter = state.withLock { state -> CheckedContinuation<Connection?, any Error>? in
            state.open -= 1
            guard !state.isClosed, !state.waiters.isEmpty else { return nil }
            state.open += 1
            return state.waiters.removeFirst()
        }
        waiter?.resume(returning: nil)
    }
}
