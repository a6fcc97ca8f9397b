import Synchronization
import TestSupport
import Testing

@testable import ControlPlane

/// The batcher alone, with a `run` that records its batches and can be held shut.
@Suite(.timeLimit(.minutes(1))) struct BatcherTests {
    /// Records every batch; the first waits until ``open()``.
    final class Runs: Sendable {
        private let state = Mutex<(batches: [[Int]], gate: CheckedContinuation<Void, Never>?, isOpen: Bool)>(
            ([], nil, false)
        )

        var batches: [[Int]] { state.withLock { $0.batches } }

        func record(_ batch: [Int]) async {
            let isFirst = state.withLock { state in
                state.batches.append(batch)
                return state.batches.count == 1
            }
            guard isFirst else { return }
            await withCheckedContinuation { continuation in
                let isOpen = state.withLock { state in
                    if !state.isOpen { state.gate = continuation }
                    return state.isOpen
                }
                if isOpen { continuation.resume() }
            }
        }

        func open() {
            let gate = state.withLock { state in
                state.isOpen = true
                defer { state.gate = nil }
                return state.gate
            }
            gate?.resume()
        }
    }

    struct Refused: Error {}

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
        let batcher = Batcher<Int, Int>(concurrency: 1, limit: 4, key: { _ in nil }) { batch in
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
        let batcher = Batcher<Int, Int>(concurrency: 1, limit: 10, key: { keys[$0] }) { batch in
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
        let batcher = Batcher<Int, Int>(concurrency: 1, limit: 10, key: { _ in nil }) { batch in
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
}
