import Logging
import Synchronization

/// Runs requests that arrive together as one batch: one statement for many creates.
///
/// Up to `concurrency` batches run at once. A request that finds a free slot runs at once,
/// alone, so a lone request never waits. Requests that arrive while every slot is busy queue,
/// and when a batch ends the next one takes the queued requests (up to `limit`). No timer.
///
/// Requests with the same key never share a batch (one statement cannot insert and update the
/// same row); the later one waits for a following batch. The request that starts a batch runs
/// it in its own task and hands each other request its answer. When a batch of several fails
/// with an error that may be one request's (`isRequestError`: the statement refused its data),
/// each of its requests runs again alone, in its own task, so one bad request fails only itself;
/// any other error (the database is away) fails them all, as it would have each alone.
final class Batcher<Request: Sendable, Answer: Sendable>: Sendable {
    typealias Run = @Sendable ([Request]) async throws -> [Answer]

    private enum Turn: Sendable {
        case lead([Waiter])
        case answered(Result<Answer, any Error>)
        case runAlone
    }

    private struct Waiter: Sendable {
        let request: Request
        let key: String?
        let continuation: CheckedContinuation<Turn, Never>
    }

    private struct State {
        var queue: [Waiter] = []
        var running = 0
    }

    private let concurrency: Int
    private let limit: Int
    private let key: @Sendable (Request) -> String?
    private let isRequestError: @Sendable (any Error) -> Bool
    private let logger: Logger
    private let run: Run
    private let state = Mutex(State())

    /// - Parameters:
    ///   - run: answers a batch, one answer per request in the same order.
    init(
        concurrency: Int,
        limit: Int,
        key: @escaping @Sendable (Request) -> String?,
        isRequestError: @escaping @Sendable (any Error) -> Bool,
        logger: Logger,
        run: @escaping Run
    ) {
        precondition(concurrency > 0 && limit > 0, "a batcher needs a slot and room for a request")
        self.concurrency = concurrency
        self.limit = limit
        self.key = key
        self.isRequestError = isRequestError
        self.logger = logger
        self.run = run
    }

    /// How many requests wait for a slot now.
    var queued: Int { state.withLock { $0.queue.count } }

    func submit(_ request: Request) async throws -> Answer {
        let key = key(request)
        let turn = await withCheckedContinuation { continuation in
            let batch = state.withLock { state -> [Waiter]? in
                state.queue.append(Waiter(request: request, key: key, continuation: continuation))
                guard state.running < concurrency else { return nil }
                state.running += 1
                return take(&state)
            }
            // The queue was empty (a free slot is never left beside queued requests), so the
            // batch is this request alone.
            if let batch { batch[0].continuation.resume(returning: .lead(batch)) }
        }
        switch turn {
        case .answered(let answer): return try answer.get()
        case .runAlone: return try await run([request])[0]
        case .lead(let batch): return try await lead(batch)
        }
    }

    /// Runs `batch`, whose first request is the caller's, and passes the slot on.
    private func lead(_ batch: [Waiter]) async throws -> Answer {
        let answers: [Answer]
        do {
            answers = try await run(batch.map(\.request))
            precondition(answers.count == batch.count, "a batch needs one answer per request")
        } catch {
            passOn()
            guard batch.count > 1, isRequestError(error) else {
                for waiter in batch.dropFirst() { waiter.continuation.resume(returning: .answered(.failure(error))) }
                throw error
            }
            logger.warning(
                "A batch was refused; running each of its requests alone.",
                metadata: ["requests": "\(batch.count)", "error": "\(error)"]
            )
            for waiter in batch.dropFirst() { waiter.continuation.resume(returning: .runAlone) }
            return try await run([batch[0].request])[0]
        }
        passOn()
        for (waiter, answer) in zip(batch, answers).dropFirst() {
            waiter.continuation.resume(returning: .answered(.success(answer)))
        }
        return answers[0]
    }

    /// Frees the caller's slot, or hands it to the first queued request with the next batch.
    private func passOn() {
        let next = state.withLock { state -> [Waiter]? in
            guard !state.queue.isEmpty else {
                state.running -= 1
                return nil
            }
            return take(&state)
        }
        if let next { next[0].continuation.resume(returning: .lead(next)) }
    }

    /// Takes the next batch from the queue, in order, leaving a request whose key is taken.
    private func take(_ state: inout State) -> [Waiter] {
        var batch: [Waiter] = []
        var keys: Set<String> = []
        var rest: [Waiter] = []
        for waiter in state.queue {
            if batch.count < limit, waiter.key.map({ keys.insert($0).inserted }) ?? true {
                batch.append(waiter)
            } else {
                rest.append(waiter)
            }
        }
        state.queue = rest
        return batch
    }
}
