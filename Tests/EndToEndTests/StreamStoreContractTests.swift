import Contracts
import Foundation
import HTTPClient
import Logging
import Nats
import ServiceKit
import Synchronization
import TestSupport
import Testing

@testable import Realtime

/// One contract, every store: the JetStream store on the test NATS server, and the S2 store
/// speaking S2's REST protocol to a real server — realtime's own S2 subset (s2.dev itself cannot
/// be reached from here).
@Suite(.timeLimit(.minutes(1))) struct StreamStoreContractTests {
    enum Kind: String, CaseIterable, CustomTestStringConvertible {
        case jetStream
        case s2AgainstRealtimeS2Subset

        var testDescription: String { rawValue }
    }

    func withStore(_ kind: Kind, _ body: (any StreamStore) async throws -> Void) async throws {
        switch kind {
        case .jetStream:
            let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "contract"))
            let store = JetStreamStore(jetStream: try JetStream(connection: connection))
            try await store.prepare()
            try await body(store)
            await connection.close()
        case .s2AgainstRealtimeS2Subset:
            let stack = try await ServicesFixture.shared.value
            let tokens = await ChannelTokens(secret: ServicesFixture.tokenSecret, lifetime: .seconds(3600))
            let store = S2Store(
                settings: .init(endpoint: stack.realtime[0].baseURL + "/realtime/s2/v1", basin: "sessions"),
                http: stack.http,
                logger: Logger(label: "contract"),
                credentials: { try await tokens.mint(for: $0) }
            )
            try await body(store)
        }
    }

    /// Two JetStream stores as two realtime instances have them: each its own connection, lock
    /// and cached positions.
    func withTwoInstances(_ body: (JetStreamStore, JetStreamStore) async throws -> Void) async throws {
        let connections = [
            try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "instance-a")),
            try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "instance-b")),
        ]
        let stores = try connections.map { JetStreamStore(jetStream: try JetStream(connection: $0)) }
        try await stores[0].prepare()
        try await body(stores[0], stores[1])
        for connection in connections { await connection.close() }
    }

    func channel() -> ChannelAddress {
        ChannelAddress(
            environmentId: TestServers.uniqueName("env"),
            friendlyId: TestServers.uniqueName("session"),
            io: .in
        )
    }

    @Test(arguments: Kind.allCases) func appendsAreDenseFromZeroAndBatchesAtomic(kind: Kind) async throws {
        try await withStore(kind) { store in
            let channel = channel()
            #expect(try await store.tail(channel).nextSeqNum == 0)
            #expect(try await store.read(channel, from: 0, limit: 10).isEmpty)
            let one = try await store.append(channel, bodies: ["a"], partId: nil, matchSeqNum: nil)
            #expect(one.start == 0 && one.end == 1)
            let batch = try await store.append(channel, bodies: ["b", "c", "d"], partId: nil, matchSeqNum: 1)
            #expect(batch.start == 1 && batch.end == 4)
            await #expect(throws: StreamStoreError.seqNumMismatch(nextSeqNum: 4)) {
                try await store.append(channel, bodies: ["e"], partId: nil, matchSeqNum: 1)
            }
            let tail = try await store.tail(channel)
            #expect(tail.nextSeqNum == 4 && tail.timestamp > 0)
            let records = try await store.read(channel, from: 0, limit: 10)
            #expect(records.map(\.body) == ["a", "b", "c", "d"])
            // An append's answer carries its records' timestamp, as read back and as the tail's.
            #expect(records.map(\.timestamp) == [one.timestamp] + Array(repeating: batch.timestamp, count: 3))
            #expect(tail.timestamp == batch.timestamp)
            #expect(try await store.read(channel, from: 2, limit: 1).map(\.seqNum) == [2])
            #expect(try await store.read(channel, from: 4, limit: 10).isEmpty)
            await #expect(throws: StreamStoreError.batchTooLarge) {
                try await store.append(channel, bodies: [], partId: nil, matchSeqNum: nil)
            }
        }
    }

    @Test(arguments: Kind.allCases) func aPartIdIsStoredOnce(kind: Kind) async throws {
        try await withStore(kind) { store in
            let channel = channel()
            _ = try await store.append(channel, bodies: [#"{"data":"x","id":"p0"}"#], partId: "p0", matchSeqNum: nil)
            let body = #"{"data":"y","id":"p1"}"#
            let acks = try await withThrowingTaskGroup(of: UInt64.self) { group in
                for _ in 0..<6 {
                    group.addTask {
                        try await store.append(channel, bodies: [body], partId: "p1", matchSeqNum: nil).start
                    }
                }
                return try await group.reduce(into: Set<UInt64>()) { $0.insert($1) }
            }
            #expect(acks == [1])
            #expect(try await store.append(channel, bodies: [body], partId: "p1", matchSeqNum: nil).start == 1)
            #expect(try await store.tail(channel).nextSeqNum == 2)
            // After a close (admission refused) a stored part still answers; a new one is refused.
            struct Closed: Error {}
            let replay = try await store.append(
                channel,
                bodies: [body],
                partId: "p1",
                matchSeqNum: nil,
                admit: { throw Closed() }
            )
            #expect(replay.start == 1 && replay.isReplay)
            await #expect(throws: Closed.self) {
                try await store.append(
                    channel,
                    bodies: ["z"],
                    partId: "p2",
                    matchSeqNum: nil,
                    admit: { throw Closed() }
                )
            }
            await #expect(throws: Closed.self) {
                try await store.append(channel, bodies: ["z"], partId: nil, matchSeqNum: nil, admit: { throw Closed() })
            }
            #expect(try await store.tail(channel).nextSeqNum == 2)
        }
    }

    /// Two instances appending the same part ids at once store each part once, and every append
    /// of a part answers the same sequence number.
    @Test func twoInstancesStoreEachPartOnce() async throws {
        try await withTwoInstances { instanceA, instanceB in
            let stores = [instanceA, instanceB]
            let channel = channel()
            let starts = try await withThrowingTaskGroup(of: [(Int, UInt64)].self) { group in
                for writer in 0..<8 {
                    group.addTask {
                        var starts: [(Int, UInt64)] = []
                        for part in 0..<5 {
                            let ack = try await stores[writer % 2].append(
                                channel,
                                bodies: ["part \(part)"],
                                partId: "part-\(part)",
                                matchSeqNum: nil
                            )
                            starts.append((part, ack.start))
                        }
                        return starts
                    }
                }
                return try await group.reduce(into: [Int: Set<UInt64>]()) { starts, pairs in
                    for (part, start) in pairs { starts[part, default: []].insert(start) }
                }
            }
            #expect(starts.count == 5 && starts.values.allSatisfy { $0.count == 1 })
            let records = try await stores[1].read(channel, from: 0, limit: 100)
            #expect(records.map(\.body).sorted() == (0..<5).map { "part \($0)" })
            #expect(records.map(\.seqNum) == Array(0..<5))
        }
    }

    /// A writer that stopped between claiming a part and writing its record leaves a claim
    /// behind; the next append of the part writes the record. A part stored by the atomic
    /// batches of earlier versions (a claim without `previous`) is not written again.
    @Test func aClaimWithoutItsRecordIsTakenOver() async throws {
        try await withTwoInstances { store, _ in
            let jetStream = store.jetStream
            let channel = channel()
            _ = try await store.append(channel, bodies: ["first"], partId: nil, matchSeqNum: nil)
            let first = try await jetStream.directGet(stream: Subjects.channelStream, .lastBySubject(channel.subject))
            let stranded = JetStreamStore.Part(channel, partId: "stranded")
            let claim = JetStreamStore.PartClaim(
                ack: .init(start: 1, end: 2, timestamp: 1),
                previous: try #require(first?.metadata?.streamSequence)
            )
            _ = try await jetStream.publish(stranded.subject, payload: try JSONEncoder().encode(claim))
            _ = try await store.append(channel, bodies: ["other"], partId: nil, matchSeqNum: nil)
            #expect(
                try await store.append(channel, bodies: ["stranded"], partId: "stranded", matchSeqNum: nil).start == 2
            )
            #expect(
                try await store.append(channel, bodies: ["stranded"], partId: "stranded", matchSeqNum: nil).start == 2
            )

            // A claim at the channel's end whose writer stopped: taken over in place, its answer kept.
            let last = try await jetStream.directGet(stream: Subjects.channelStream, .lastBySubject(channel.subject))
            let atEnd = JetStreamStore.Part(channel, partId: "at-end")
            let kept = AppendAck(start: 3, end: 4, timestamp: 555)
            // In the first version's flat form, which is a claim too.
            _ = try await jetStream.publish(
                atEnd.subject,
                payload: Data(
                    #"{"start":3,"end":4,"timestamp":555,"previous":\#(try #require(last?.metadata?.streamSequence))}"#
                        .utf8
                )
            )
            #expect(try await store.append(channel, bodies: ["at-end"], partId: "at-end", matchSeqNum: nil) == kept)
            #expect(try await store.append(channel, bodies: ["at-end"], partId: "at-end", matchSeqNum: nil) == kept)

            let legacy = JetStreamStore.Part(channel, partId: "legacy")
            _ = try await jetStream.publish(
                legacy.subject,
                payload: try JSONEncoder().encode(AppendAck(start: 0, end: 1, timestamp: 1))
            )
            #expect(try await store.append(channel, bodies: ["legacy"], partId: "legacy", matchSeqNum: nil).start == 0)
            #expect(
                try await store.read(channel, from: 0, limit: 10).map(\.body) == [
                    "first", "other", "stranded", "at-end",
                ]
            )
        }
    }

    /// Instance A claimed a part and its record is under way; instance B, whose cached position
    /// is older than A's claim, appends the same part. B must not move the claim back (A's
    /// record would then land where no claim points, and the part be written twice), and it
    /// answers A's acknowledgement.
    @Test func aClaimIsNeverTakenBackToAStalePosition() async throws {
        try await withTwoInstances { instanceA, instanceB in
            let jetStream = instanceA.jetStream
            let channel = channel()
            _ = try await instanceB.append(channel, bodies: ["b"], partId: nil, matchSeqNum: nil)
            _ = try await instanceA.append(channel, bodies: ["a"], partId: nil, matchSeqNum: nil)
            let last = try #require(
                try await jetStream.directGet(stream: Subjects.channelStream, .lastBySubject(channel.subject))?
                    .metadata?
                    .streamSequence
            )
            let part = JetStreamStore.Part(channel, partId: "p")
            let claimed = AppendAck(start: 2, end: 3, timestamp: 777)
            _ = try await jetStream.publish(
                part.subject,
                payload: try JSONEncoder().encode(JetStreamStore.PartClaim(ack: claimed, previous: last))
            )

            #expect(try await instanceB.append(channel, bodies: ["p"], partId: "p", matchSeqNum: nil) == claimed)
            let claims = try await jetStream.directGetBatch(
                stream: Subjects.channelStream,
                subject: part.subject,
                from: 1,
                maxCount: 10
            )
            #expect(claims.compactMap { JetStreamStore.PartClaim(decoding: $0.payload)?.previous } == [last, last])
            // A's record, late, finds the channel moved on.
            await #expect(throws: NatsError.self) {
                try await jetStream.publish(channel.subject, payload: Data("p".utf8), expectedLastSubjectSequence: last)
            }
            #expect(try await instanceA.read(channel, from: 0, limit: 10).map(\.body) == ["b", "a", "p"])
        }
    }

    /// `matchSeqNum` is compared with the channel's end, not with what this instance last saw.
    @Test func matchSeqNumSeesAnotherInstancesAppends() async throws {
        try await withTwoInstances { instanceA, instanceB in
            let channel = channel()
            _ = try await instanceB.append(channel, bodies: ["b"], partId: nil, matchSeqNum: 0)
            _ = try await instanceA.append(channel, bodies: ["a"], partId: nil, matchSeqNum: 1)
            #expect(try await instanceB.append(channel, bodies: ["c"], partId: nil, matchSeqNum: 2).start == 2)
            await #expect(throws: StreamStoreError.seqNumMismatch(nextSeqNum: 3)) {
                try await instanceB.append(channel, bodies: ["d"], partId: nil, matchSeqNum: 1)
            }
        }
    }

    /// A part id keeps its answer whatever else the append carries: a retry with `matchSeqNum`
    /// answers the stored acknowledgement, and a part of several records is stored once.
    @Test func aPartAnswersItsAcknowledgementWithMatchSeqNumAndSeveralRecords() async throws {
        try await withTwoInstances { store, _ in
            let channel = channel()
            let first = try await store.append(channel, bodies: ["x"], partId: "m", matchSeqNum: 0)
            #expect(try await store.append(channel, bodies: ["x"], partId: "m", matchSeqNum: 0) == first)
            let several = try await store.append(channel, bodies: ["a", "b"], partId: "several", matchSeqNum: nil)
            #expect(several.start == 1 && several.end == 3)
            #expect(
                try await store.append(channel, bodies: ["a", "b"], partId: "several", matchSeqNum: nil) == several
            )
            #expect(try await store.read(channel, from: 0, limit: 10).map(\.body) == ["x", "a", "b"])
        }
    }

    @Test(arguments: Kind.allCases) func concurrentWritersNeverForkOrSkip(kind: Kind) async throws {
        try await withStore(kind) { store in
            let channel = channel()
            let starts = try await withThrowingTaskGroup(of: [UInt64].self) { group in
                for writer in 0..<8 {
                    group.addTask {
                        var starts: [UInt64] = []
                        for index in 0..<10 {
                            starts.append(
                                try await store.append(
                                    channel,
                                    bodies: ["\(writer)-\(index)"],
                                    partId: nil,
                                    matchSeqNum: nil
                                ).start
                            )
                        }
                        return starts
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(starts.sorted() == Array(0..<80))
            let records = try await store.read(channel, from: 0, limit: 100)
            #expect(records.map(\.seqNum) == Array(0..<80))
        }
    }

    /// Two instances with writers queued on one channel never fork or skip, and every append's
    /// answer names the record it wrote (a loser of a race reads the channel's end and retries).
    @Test func twoInstancesOfQueuedWritersNeverForkOrSkip() async throws {
        try await withTwoInstances { instanceA, instanceB in
            let channel = channel()
            let written = try await withThrowingTaskGroup(of: [(UInt64, String)].self) { group in
                for writer in 0..<8 {
                    let store = writer % 2 == 0 ? instanceA : instanceB
                    group.addTask {
                        var written: [(UInt64, String)] = []
                        for index in 0..<25 {
                            let body = "\(writer)-\(index)"
                            let ack = try await store.append(channel, bodies: [body], partId: nil, matchSeqNum: nil)
                            written.append((ack.start, body))
                        }
                        return written
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(written.map(\.0).sorted() == Array(0..<200))
            var records: [ChannelRecord] = []
            while records.count < 200 {
                let page = try await instanceA.read(channel, from: UInt64(records.count), limit: 200)
                guard !page.isEmpty else { break }
                records += page
            }
            #expect(records.map(\.seqNum) == Array(0..<200))
            let bodies = Dictionary(uniqueKeysWithValues: records.map { ($0.seqNum, $0.body) })
            #expect(written.allSatisfy { bodies[$0.0] == $0.1 })
        }
    }

    @Test func anS2FollowLooksAgainAndReconnectsWhenAStubS2ServerIsMissingOrFallsSilent() async throws {
        // A stub, since a real S2 cannot be made to stall: the first read finds no stream, the
        // second gets one record and then nothing at all, over a connection left open.
        let server = try SilentS2Stub()
        defer { server.stop() }
        let store = S2Store(
            settings: .init(endpoint: "http://127.0.0.1:\(server.port)/v1", basin: "b", silenceLimit: .seconds(1)),
            http: HTTPClient(),
            logger: Logger(label: "stub"),
            credentials: { _ in "token" }
        )
        let records = try await store.follow(
            ChannelAddress(environmentId: "e", friendlyId: "session_s", io: .out),
            from: 0
        )
        let first = try await withTimeout(.seconds(5)) { () async throws -> UInt64? in
            for try await record in records { return record.seqNum }
            return nil
        }
        #expect(first == 0)
        let reconnected = try await TestServers.waitUntil(timeout: .seconds(10)) {
            server.connections.load(ordering: .relaxed) >= 3
        }
        #expect(reconnected, "a silent read session was given up and opened again")
        #expect(server.lastRequest.withLock { $0 }.contains("seq_num=1"), "from the record after the last one")
    }

    /// Records with headers, and bodies that are not text, come back as they went in.
    @Test(arguments: Kind.allCases) func headersAndBytesAreKept(kind: Kind) async throws {
        try await withStore(kind) { store in
            let channel = channel()
            let written = [
                NewRecord(body: "", headers: [["trigger-control", "turn-complete"], ["k", "ü"]]),
                NewRecord(body: Data([0xFF, 0, 0xC8]).base64EncodedString(), isBinary: true),
                NewRecord(body: "plain"),
            ]
            _ = try await store.append(channel, records: written, partId: nil, matchSeqNum: nil, admit: {})
            let read = try await store.read(channel, from: 0, limit: 10)
            #expect(read.map(\.headers) == written.map(\.headers))
            #expect(read.map(\.body) == written.map(\.body))
            #expect(read.map(\.isBinary) == [false, true, false])
        }
    }

    @Test(arguments: Kind.allCases) func followReplaysThenDeliversNewRecords(kind: Kind) async throws {
        try await withStore(kind) { store in
            let channel = channel()
            for index in 0..<5 {
                _ = try await store.append(channel, bodies: ["\(index)"], partId: nil, matchSeqNum: nil)
            }
            let follower = Task {
                var received: [ChannelRecord] = []
                for try await record in try await store.follow(channel, from: 2) {
                    received.append(record)
                    if received.count == 6 { break }
                }
                return received
            }
            for index in 5..<9 {
                _ = try await store.append(channel, bodies: ["\(index)"], partId: nil, matchSeqNum: nil)
            }
            let received = try await follower.value
            #expect(received.map(\.seqNum) == Array(2..<8))
            #expect(received.map(\.body) == (2..<8).map(String.init))
            let readLater = try await store.read(channel, from: 2, limit: 6)
            #expect(received == readLater, "the same records, to the millisecond, live and read again")
        }
    }
}

/// Speaks just enough HTTP to stand in for S2's read endpoint: 404 to the first request, one
/// SSE batch and then silence to the second, silence to the rest (connections stay open).
final class SilentS2Stub: Sendable {
    let port: Int
    let connections = Atomic<Int>(0)
    let lastRequest = Mutex("")
    private let listener: Int32
    private let accepted = Mutex<[Int32]>([])

    init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = TestServers.loopbackAddress(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, length) == 0 && listen(descriptor, 8) == 0
                    && getsockname(descriptor, $0, &length) == 0
            }
        }
        guard bound else {
            close(descriptor)
            throw POSIXError(.EADDRINUSE)
        }
        listener = descriptor
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread { [self] in serve() }.start()
    }

    private func serve() {
        while true {
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { return }
            accepted.withLock { $0.append(connection) }
            var buffer = [UInt8](repeating: 0, count: 16 * 1024)
            let count = recv(connection, &buffer, buffer.count, 0)
            lastRequest.withLock { $0 = String(decoding: buffer.prefix(max(count, 0)), as: UTF8.self) }
            let answer =
                switch connections.add(1, ordering: .relaxed).newValue {
                case 1: "HTTP/1.1 404 Not Found\r\nContent-Length: 27\r\n\r\n{\"code\":\"stream_not_found\"}"
                case 2:
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
                        + "event: batch\ndata: {\"records\":[{\"seq_num\":0,\"timestamp\":1,\"body\":\"a\"}]}\n\n"
                default: "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
                }
            let bytes = Array(answer.utf8)
            _ = send(connection, bytes, bytes.count, Int32(MSG_NOSIGNAL))
        }
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for connection in accepted.withLock({ $0 }) { close(connection) }
    }
}
