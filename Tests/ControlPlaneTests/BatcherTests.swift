import Logging
import Synchronization
import TestSupport
import Testing

@testable import ControlPlane

/// The batcher alone, with a `run` that records its batches and can be held shut.
@Suite(.timeLimit(.minutes(1))) struct BatcherTests {
    /// Records every batch; the first `held` wait until ``open()``.
    final class Runs: Sendable {
        private struct State {
            var batches: [[Int]] = []
            var gates: [CheckedContinuation<Void, Never>] = []
            var isOpen = false
        }

        private let held: Int
        private let state = Mutex(State())

        init(held: Int = 1) { self.held = held }

        var batches: [[Int]] { state.withLock { $0.batches } }

        func record(_ batch: [Int]) async {
            let isHeld = state.withLock { state in
                state.batches.append(batch)
                return state.batches.count <= held
            }
            guard isHeld else { return }
            await withCheckedContinuation { continuation in
                let isOpen = state.withLock { state in
                    if !state.isOpen { state.gates.append(continuation) }
                    return state.isOpen
                }
                if isOpen { continuation.resume() }
            }
        }

        func open() {
            let gates = state.withLock { state in
                state.isOpen = true
                defer { state.gates = [] }
                return state.gates
            }
            for gate in gates { gate.resume() }
        }
    }

    /// An error of one request's data, which the batcher answers by running each request alone.
    struct Refused: Error {}
    /// Any other error: the batch fails as a whole.
    struct Away: Error {}

    func batcher(
        concurrency: Int = 1,
        limit: Int = 10,
        key: @escaping @Sendable (Int) -> String? = { _ in nil },
        run: @escaping @Sendable ([Int]) async throws -> [Int]
    ) -> Batcher<Int, Int> {
        Batcher(
            concurrency: concurrency,
            limit: limit,
            key: key,
            isRequestError: { $0 is Refused },
            logger: Logger(label: "test"),
            run: run
        )
    }

    /// Submits `first` and waits until its batch runs and holds the only slot, then submits
    /// `rest` while it is held, waits until they all queue, opens the gate and returns every
    /// answer by request.
    func submit(
        first: Int,
        rest: [Int],
        to batcher: Batcher<Int, Int>,
        runs: Runs
    ) async throws -> [Int: Result<Int, any Error>] {
        @Sendable func answer(_ request: Int) async -> (Int, Result<Int, any Error>) {
            do {
                return (request, .success(try await batcher.submit(request)))
            } catch {
                return (request, .failure(error))
            }
        }
        return try await withThrowingTaskGroup(of: (Int, Result<Int, any Error>).self) { group in
            group.addTask { await answer(first) }
            #expect(try await TestServers.waitUntil { runs.batches.count == 1 })
            for request in rest {
                group.addTask { await answer(request) }
            }
            #expect(try await TestServers.waitUntil { batcher.queued == rest.count })
            runs.open()
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
    }

    @Test func requestsThatArriveWhileTheSlotIsBusyRunTogetherInOrder() async throws {
        let runs = Runs()
        let batcher = batcher(limit: 4) { batch in
            await runs.record(batch)
            return batch.map { $0 * 10 }
        }
        // The queue's order is the order of arrival: submit one at a time.
        let answers = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            group.addTask { (0, try await batcher.submit(0)) }
            #expect(try await TestServers.waitUntil { runs.batches.count == 1 })
            for request in 1...9 {
                group.addTask { (request, try await batcher.submit(request)) }
                #expect(try await TestServers.waitUntil { batcher.queued == request })
            }
            runs.open()
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        #expect(runs.batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]])
        #expect(answers == Dictionary(uniqueKeysWithValues: (0...9).map { ($0, $0 * 10) }))
        #expect(batcher.queued == 0)
    }

    @Test func requestsWithOneKeyNeverShareABatch() async throws {
        let runs = Runs()
        let keys = [1: "a", 2: "a", 3: "b", 4: "a"]
        let batcher = batcher(key: { keys[$0] }) { batch in
            await runs.record(batch)
            return batch
        }
        let answers = try await submit(first: 0, rest: [1, 2, 3, 4, 5, 6], to: batcher, runs: runs)
        let batches = runs.batches
        #expect(batches.count == 4)
        #expect(batches.first == [0])
        #expect(batches.flatMap { $0 }.sorted() == Array(0...6))
        for batch in batches {
            let batchKeys = batch.compactMap { keys[$0] }
            #expect(Set(batchKeys).count == batchKeys.count, "\(batch) has a key twice")
        }
        #expect(answers.allSatisfy { (try? $0.value.get()) == $0.key })
    }

    @Test func aBatchThatFailsRunsEachOfItsRequestsAlone() async throws {
        let runs = Runs()
        let batcher = batcher { batch in
            await runs.record(batch)
            if batch.contains(3) { throw Refused() }
            return batch.map { $0 * 10 }
        }
        let answers = try await submit(first: 0, rest: [1, 2, 3, 4], to: batcher, runs: runs)
        let batches = runs.batches
        #expect(batches.first == [0])
        #expect(batches.dropFirst().first?.count == 4, "the four queued requests ran together first")
        #expect(batches.dropFirst(2).map(\.count) == [1, 1, 1, 1], "then each alone")
        for request in [0, 1, 2, 4] {
            #expect((try? answers[request]?.get()) == request * 10)
        }
        #expect(throws: Refused.self) { try answers[3]?.get() }
    }

    @Test func anErrorThatIsNotTheRequestsOwnFailsTheWholeBatchOnce() async throws {
        let runs = Runs()
        let batcher = batcher { batch in
            await runs.record(batch)
            if batch.count > 1 { throw Away() }
            return batch
        }
        let answers = try await submit(first: 0, rest: [1, 2, 3], to: batcher, runs: runs)
        #expect(runs.batches.count == 2, "no request ran again: \(runs.batches)")
        #expect((try? answers[0]?.get()) == 0)
        for request in [1, 2, 3] {
            #expect(throws: Away.self) { try answers[request]?.get() }
        }
    }

    @Test func upToConcurrencyBatchesRunAtOnce() async throws {
        let runs = Runs(held: 2)
        let batcher = batcher(concurrency: 2) { batch in
            await runs.record(batch)
            return batch
        }
        let answers = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            group.addTask { (0, try await batcher.submit(0)) }
            group.addTask { (1, try await batcher.submit(1)) }
            #expect(try await TestServers.waitUntil { runs.batches.count == 2 }, "two lone requests run at once")
            group.addTask { (2, try await batcher.submit(2)) }
            #expect(try await TestServers.waitUntil { batcher.queued == 1 }, "a third waits for a slot")
            #expect(runs.batches.count == 2)
            runs.open()
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        #expect(answers == [0: 0, 1: 1, 2: 2])
        #expect(runs.batches.map(\.count) == [1, 1, 1])
    }
}
