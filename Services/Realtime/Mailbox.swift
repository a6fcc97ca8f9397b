import Contracts
import Synchronization

extension Collection<ChannelRecord> {
    /// The bytes of the records' bodies.
    var bodyBytes: Int { reduce(0) { $0 + $1.body.utf8.count } }
}

/// The records waiting for one subscriber, bounded: a subscriber that falls `limit` records, or
/// `byteLimit` bytes of them, behind is ended (it resumes with Last-Event-ID) instead of growing
/// memory without bound.
final class Mailbox: Sendable {
    enum Ending: Error, Equatable {
        /// The subscriber fell too far behind.
        case tooSlow
        /// The upstream subscription failed.
        case upstreamFailed
        /// The service is shutting down.
        case shutdown
    }

    private struct State {
        var records: [ChannelRecord] = []
        var bytes = 0
        var waiter: CheckedContinuation<[ChannelRecord]?, any Error>?
        var ending: Ending?
        /// Woken while nobody waited: the next `next` returns at once.
        var woken = false
    }

    let limit: Int
    let byteLimit: Int
    private let state = Mutex(State())

    init(limit: Int, byteLimit: Int = 16 << 20) {
        self.limit = limit
        self.byteLimit = byteLimit
    }

    /// Adds records; false (and the mailbox ends) when that would exceed the limit.
    @discardableResult
    func push(_ records: some Collection<ChannelRecord>) -> Bool {
        if records.isEmpty { return true }
        let (waiter, delivered, accepted) = state.withLock {
            state -> (CheckedContinuation<[ChannelRecord]?, any Error>?, [ChannelRecord], Bool) in
            guard state.ending == nil else { return (nil, [], false) }
            if let waiter = state.waiter {
                state.waiter = nil
                return (waiter, Array(records), true)
            }
            let bytes = state.bytes + records.bodyBytes
            guard state.records.count + records.count <= limit, bytes <= byteLimit else {
                state.ending = .tooSlow
                (state.records, state.bytes) = ([], 0)
                return (nil, [], false)
            }
            state.records.append(contentsOf: records)
            state.bytes = bytes
            return (nil, [], true)
        }
        waiter?.resume(returning: delivered)
        return accepted
    }

    /// Ends the mailbox: records already in it are still delivered, then `next` throws `ending`.
    func end(_ ending: Ending) {
        let waiter = state.withLock { state in
            if state.ending == nil { state.ending = ending }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(throwing: ending)
    }

    /// Wakes `next` with no records (for heartbeats, idle checks, and a feed that has begun):
    /// the one waiting, or else the next call.
    func wake() {
        let waiter = state.withLock { state in
            defer { state.waiter = nil }
            if state.waiter == nil { state.woken = true }
            return state.waiter
        }
        waiter?.resume(returning: [])
    }

    /// Every record waiting, or waits for some; an empty array when woken by ``wake()``; nil
    /// when the task is cancelled. Throws the ending once the mailbox has ended and is empty.
    func next() async throws -> [ChannelRecord]? {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let immediate = state.withLock { state -> Result<[ChannelRecord]?, any Error>? in
                    if !state.records.isEmpty {
                        defer { (state.records, state.bytes, state.woken) = ([], 0, false) }
                        return .success(state.records)
                    }
                    if let ending = state.ending { return .failure(ending) }
                    if state.woken {
                        state.woken = false
                        return .success([])
                    }
                    if Task.isCancelled { return .success(nil) }
                    state.waiter = continuation
                    return nil
                }
                if let immediate { continuation.resume(with: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: nil)
        }
    }
}
