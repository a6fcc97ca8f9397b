import Contracts
import Foundation
import HTTPClient
import TestSupport
import Testing

@Suite(.timeLimit(.minutes(2))) struct RealtimeChannelTests {
    @Test func appendsGetDenseSequenceNumbersAndReplayInOrder() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        for index in 0..<5 {
            #expect(try await stack.appended(session.id, "message \(index)") == UInt64(index))
        }
        let (status, events) = try await stack.subscribe(session.id)
        #expect(status == 200)
        let records = events.flatMap(\.records)
        #expect(records.map(\.seqNum) == [0, 1, 2, 3, 4])
        #expect(records.map { $0.envelope?.data } == (0..<5).map { "message \($0)" })
        #expect(records.allSatisfy { ($0.envelope?.id.isEmpty ?? true) == false })
        #expect(events.first { $0.event == "batch" }?.id == "4", "id is the batch's last seq_num")
        let head = try await stack.http.execute(
            HTTPRequest(method: "HEAD", url: stack.channelURL(session.id), headers: stack.auth)
        )
        #expect(head.headers["X-Last-Seq-Num"] == "4")
        let empty = try await stack.http.execute(
            HTTPRequest(method: "HEAD", url: stack.channelURL(session.id, "in"), headers: stack.auth)
        )
        #expect(empty.headers["X-Last-Seq-Num"] == "-1")
    }

    @Test func eightConcurrentWritersOnTwoInstancesNeverForkOrSkip() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let perWriter = 25
        let acknowledged = try await withThrowingTaskGroup(of: [(UInt64, String)].self) { group in
            for writer in 0..<8 {
                group.addTask {
                    var acks: [(UInt64, String)] = []
                    for index in 0..<perWriter {
                        let body = "w\(writer)-\(index)"
                        acks.append((try await stack.appended(session.id, body, instance: writer % 2), body))
                    }
                    return acks
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        let total = 8 * perWriter
        #expect(Set(acknowledged.map(\.0)) == Set((0..<UInt64(total))), "no gaps, no duplicates")
        let (_, events) = try await stack.subscribe(session.id, instance: 1) { $0.count >= total }
        let records = events.flatMap(\.records)
        #expect(records.map(\.seqNum) == Array(0..<UInt64(total)))
        let bodyBySeq = Dictionary(uniqueKeysWithValues: acknowledged)
        #expect(records.allSatisfy { bodyBySeq[$0.seqNum] == $0.envelope?.data }, "each ack names its own record")
    }

    @Test func resumingFromEveryPositionReturnsExactlyTheRemainder() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let count: UInt64 = 12
        for index in 0..<count { _ = try await stack.appended(session.id, "r\(index)") }
        let positions: [String] = ["-1", "-5"] + (0..<count).map(String.init) + ["3,4,100", "11,12,500"]
        try await withThrowingTaskGroup(of: (String, [UInt64]).self) { group in
            for position in positions {
                group.addTask {
                    let (_, events) = try await stack.subscribe(session.id, lastEventID: position)
                    return (position, events.flatMap(\.records).map(\.seqNum))
                }
            }
            for try await (position, seqNums) in group {
                let last = Int64(position.split(separator: ",")[0])!
                let expected = Array(UInt64(max(last + 1, 0))..<count)
                #expect(seqNums == expected, "Last-Event-ID \(position)")
            }
        }
        // Past the end: the stream starts at the end, so later records are not skipped (it used
        // to wait for record 21, leaving out everything before it).
        let appender = Task {
            for index in 0..<100 {
                _ = try await stack.appended(session.id, "later \(index)")
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        let received = try await stack.subscribe(session.id, lastEventID: "1000", timeoutSeconds: 10) { !$0.isEmpty }
            .events.flatMap(\.records).map(\.seqNum)
        appender.cancel()
        let first = try #require(received.first)
        #expect(first < 1001, "the first record appended after subscribing, not record 1001")
    }

    @Test func aRetriedPartIdWritesOnceForTheLifeOfTheSession() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        _ = try await stack.appended(session.id, "before")
        let seqNums = try await withThrowingTaskGroup(of: UInt64.self) { group in
            for attempt in 0..<10 {
                group.addTask { try await stack.appended(session.id, "once", partId: "part-1", instance: attempt % 2) }
            }
            return try await group.reduce(into: Set<UInt64>()) { $0.insert($1) }
        }
        #expect(seqNums == [1])
        _ = try await stack.appended(session.id, "after")
        #expect(try await stack.appended(session.id, "once", partId: "part-1") == 1, "still the original later on")
        let records = try await stack.subscribe(session.id).events.flatMap(\.records)
        #expect(records.map { $0.envelope?.data } == ["before", "once", "after"])
        #expect(records[1].envelope?.id == "part-1")
        // The same part id on the other channel is a different record.
        #expect(try await stack.appended(session.id, "in", io: "in", partId: "part-1") == 0)
        // After a close, a retry whose first answer was lost still learns its seqNum; a new part
        // is refused.
        #expect(try await stack.close(session.id).status == 200)
        // (Each instance takes the close within 100 ms; a PUT, which writes nothing, shows it.)
        let told = try await TestServers.waitUntil {
            try await stack.http.execute(
                HTTPRequest(method: "PUT", url: stack.channelURL(session.id, "out", instance: 1), headers: stack.auth)
            ).status == 400
        }
        #expect(told)
        for instance in [0, 1] {
            #expect(try await stack.appended(session.id, "once", partId: "part-1", instance: instance) == 1)
            let fresh = try await stack.append(session.id, "new", partId: "part-2", instance: instance)
            #expect(fresh.status == 400, "\(String(decoding: fresh.body, as: UTF8.self))")
        }
    }

    /// `realtime_appended_records_total` counts records stored: a retried part id stores none.
    @Test func theAppendedRecordsCounterLeavesOutRetriedParts() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let (realtime, _) = try await Self.ownRealtime(stack, [:])
        let counter = "realtime_appended_records_total"
        #expect(try await realtime.metric(counter, stack.http) == 0, "exported before the first append")
        for (body, partId) in [("a", "p"), ("a", "p"), ("a", "p"), ("b", nil)] {
            var headers: HTTPHeaders = ["Authorization": "Bearer \(stack.apiKey)"]
            if let partId { headers.add("X-Part-Id", partId) }
            let url = realtime.baseURL + "/realtime/v1/sessions/\(session.id)/out/append"
            let response = try await stack.http.execute(
                HTTPRequest(method: "POST", url: url, headers: headers, body: Data(body.utf8))
            )
            #expect(response.status == 200)
        }
        #expect(try await realtime.metric(counter, stack.http) == 2)
        #expect(try await realtime.terminate(timeout: .seconds(5)) == 0)
    }

    @Test func liveSubscribersOfOneChannelAllGetEveryRecordInOrder() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let total = 30
        try await withThrowingTaskGroup(of: [UInt64].self) { group in
            for subscriber in 0..<6 {
                group.addTask {
                    let (_, events) = try await stack.subscribe(
                        session.id,
                        timeoutSeconds: 10,
                        instance: subscriber % 2
                    ) {
                        $0.count >= total
                    }
                    return events.flatMap(\.records).map(\.seqNum)
                }
            }
            // Subscribers attach while the appends run: whether a record reaches one by replay or
            // live, each must get every record, in order, once.
            group.addTask {
                for index in 0..<total { _ = try await stack.appended(session.id, "live \(index)") }
                return []
            }
            for try await seqNums in group where !seqNums.isEmpty {
                #expect(seqNums == Array(0..<UInt64(total)))
            }
        }
    }

    @Test func aReconnectingSubscriberMissesNothing() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        for index in 0..<5 { _ = try await stack.appended(session.id, "a\(index)") }
        let first = try await stack.subscribe(session.id, timeoutSeconds: 10) { $0.count >= 3 }
        let seen = first.events.flatMap(\.records)
        let lastID = try #require(first.events.last { $0.event == "batch" }?.id)
        for index in 0..<5 { _ = try await stack.appended(session.id, "b\(index)") }
        let second = try await stack.subscribe(session.id, lastEventID: lastID, instance: 1)
        let all = seen + second.events.flatMap(\.records)
        #expect(all.map(\.seqNum) == Array(0..<10))
    }

    @Test func anExternalIdSubscribedBeforeItsSessionExistsGetsItsRecords() async throws {
        let stack = try await ServicesFixture.shared.value
        let externalId = TestServers.uniqueName("later")
        async let subscribed = stack.subscribe(externalId, timeoutSeconds: 15) { $0.count >= 1 }
        // The subscriber may attach before or after this create: either way it must see the record.
        try await Task.sleep(for: .milliseconds(300))
        let session = try await stack.createSession(externalId: externalId)
        _ = try await stack.appended(session.id, "first")
        let (status, events) = try await subscribed
        #expect(status == 200)
        #expect(events.flatMap(\.records).map { $0.envelope?.data } == ["first"])
    }

    @Test func pingsKeepAnIdleStreamAliveUntilItsTimeout() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let start = ContinuousClock.now
        let (_, events) = try await stack.subscribe(session.id, timeoutSeconds: 3)
        let elapsed = ContinuousClock.now - start
        #expect(events.contains { $0.event == "ping" }, "SESSIONS_SSE_PING_SECONDS=1 in the fixture")
        #expect(elapsed >= .seconds(3) && elapsed < .seconds(6), "ended after the idle timeout: \(elapsed)")
        // Also while a subscriber waits for a session that does not exist yet.
        let (_, waiting) = try await stack.subscribe(TestServers.uniqueName("never"), timeoutSeconds: 3)
        #expect(waiting.contains { $0.event == "ping" }, "\(waiting)")
    }

    /// Appends queued on a channel when its session closes check again at their turn: none is
    /// written long after the close, however many were waiting.
    @Test func appendsQueuedWhenTheSessionClosesAreRefusedAtTheirTurn() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        #expect(try await stack.append(session.id, "open").status == 200)
        // Many at once, so that a queue forms on the channel.
        let http = HTTPClient(configuration: .init(poolSize: 256))
        let appends = Task {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<256 {
                    group.addTask {
                        try await http.execute(
                            HTTPRequest(
                                method: "POST",
                                url: stack.channelURL(session.id) + "/append",
                                headers: stack.auth,
                                body: Data("queued \(index)".utf8)
                            )
                        ).status
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
        }
        try await Task.sleep(for: .milliseconds(30))  // let a queue form
        let close = try await stack.close(session.id)
        let closedAt = try #require(try JSONDecoder.sessions.decode(SessionItem.self, from: close.body).closedAt)
        let statuses = try await appends.value
        await http.close()
        let records = try await stack.subscribe(session.id, timeoutSeconds: 1).events.flatMap(\.records)
        #expect(records.count == 1 + statuses.filter { $0 == 200 }.count, "every 200 stored, no other")
        let late = records.filter { Double($0.timestamp) / 1000 > closedAt.timeIntervalSince1970 + 0.1 }
        // One append per channel and instance is between its check and its write at a time: that
        // one may land late when the machine is slow; the queue behind it may not.
        #expect(late.count <= 1, "\(late.count) of \(records.count) records written over 100 ms after the close")
        #expect(statuses.allSatisfy { $0 == 200 || $0 == 400 })
    }

    @Test func appendsStopAtTheCloseWithin100Milliseconds() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        // Both instances know the session as open (and keep it: their cache lives 30 s).
        for instance in 0..<2 { #expect(try await stack.append(session.id, "open", instance: instance).status == 200) }
        // A direct writer's channel token, issued before the close.
        let initialized = try await stack.http.execute(
            HTTPRequest(method: "PUT", url: stack.channelURL(session.id), headers: stack.auth)
        )
        let token = try #require(initialized.headers["X-S2-Access-Token"])
        let stream = try #require(
            initialized.headers["X-S2-Stream-Name"]?.addingPercentEncoding(withAllowedCharacters: .alphanumerics)
        )
        let close = try await stack.close(session.id)
        #expect(close.status == 200)
        // The bound under test: an append that starts 100 ms after the close is refused on every instance.
        try await Task.sleep(for: .milliseconds(100))
        for instance in 0..<2 {
            let refused = try await stack.append(session.id, "late", instance: instance)
            #expect(refused.status == 400)
            #expect(
                String(decoding: refused.body, as: UTF8.self)
                    == #"{"error":"Cannot append to a closed session","ok":false}"#
            )
        }
        let put = try await stack.http.execute(
            HTTPRequest(method: "PUT", url: stack.channelURL(session.id), headers: stack.auth)
        )
        #expect(put.status == 400)
        let direct = try await stack.http.execute(
            HTTPRequest(
                method: "POST",
                url: stack.realtime[0].baseURL + "/realtime/s2/v1/streams/\(stream)/records",
                headers: ["Authorization": "Bearer \(token)", "Content-Type": "application/json"],
                body: Data(#"{"records":[{"body":"late"}]}"#.utf8)
            )
        )
        #expect(direct.status == 400, "the token outlives the close, the right to append does not")
        #expect(String(decoding: direct.body, as: UTF8.self).contains("Cannot append to a closed session"))
        let history = try await stack.subscribe(session.id)
        #expect(history.events.flatMap(\.records).map(\.seqNum) == [0, 1], "a closed session stays readable")
    }

    @Test func anExpiredSessionTakesNoWritesButStaysReadable() async throws {
        let stack = try await ServicesFixture.shared.value
        let created = try await stack.http.execute(
            HTTPRequest(
                method: "POST",
                url: stack.controlPlane.baseURL + "/api/v1/sessions",
                headers: ["Authorization": "Bearer \(stack.apiKey)", "Content-Type": "application/json"],
                body: Data(#"{"type":"t","expiresAt":"2020-01-01T00:00:00.000Z"}"#.utf8)
            )
        )
        #expect(created.status == 201, "\(String(decoding: created.body, as: UTF8.self))")
        let id = try JSONDecoder.sessions.decode(CreatedSession.self, from: created.body).session.id
        let put = try await stack.http.execute(
            HTTPRequest(method: "PUT", url: stack.channelURL(id), headers: stack.auth)
        )
        #expect(put.status == 400)
        #expect(String(decoding: put.body, as: UTF8.self).contains("Cannot initialize a channel on an expired session"))
        let append = try await stack.append(id, "late")
        #expect(append.status == 400)
        #expect(String(decoding: append.body, as: UTF8.self).contains("Cannot append to an expired session"))
        let history = try await stack.subscribe(id, timeoutSeconds: 1)
        #expect(history.status == 200, "an expired session stays readable")
        #expect(history.events.flatMap(\.records).isEmpty)
    }

    @Test func aRenamedExternalIdStopsNamingTheSessionAtOnce() async throws {
        let stack = try await ServicesFixture.shared.value
        let old = "rename-\(UUID().uuidString)"
        let session = try await stack.createSession(externalId: old)
        for instance in 0..<2 { #expect(try await stack.append(old, "by old name", instance: instance).status == 200) }
        let new = "renamed-\(UUID().uuidString)"
        let patch = try await stack.http.execute(
            HTTPRequest(
                method: "PATCH",
                url: stack.controlPlane.baseURL + "/api/v1/sessions/\(session.id)",
                headers: ["Authorization": "Bearer \(stack.apiKey)", "Content-Type": "application/json"],
                body: Data(#"{"externalId":"\#(new)"}"#.utf8)
            )
        )
        #expect(patch.status == 200)
        try await Task.sleep(for: .milliseconds(100))
        for instance in 0..<2 {
            #expect(try await stack.append(old, "late", instance: instance).status == 404, "instance \(instance)")
            #expect(try await stack.append(new, "by new name", instance: instance).status == 200)
        }
    }

    /// Two externalIds that differ only in how "é" is written are two sessions: realtime's cache
    /// of names must not take one for the other.
    @Test func canonicallyEquivalentExternalIdsReachTheirOwnSessions() async throws {
        let stack = try await ServicesFixture.shared.value
        let base = TestServers.uniqueName("caf")
        let names = [base + "\u{E9}", base + "e\u{301}"]
        var ids: [String] = []
        for name in names { ids.append(try await stack.createSession(externalId: name).id) }
        #expect(ids[0] != ids[1])
        for (index, name) in names.enumerated() {
            let encoded = name.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            #expect(try await stack.appended(encoded, "to \(index)") == 0, "the first record of its own session")
        }
        for (index, id) in ids.enumerated() {
            let events = try await stack.subscribe(id, until: { !$0.isEmpty }).events
            #expect(events.flatMap(\.records).map { $0.envelope?.data } == ["to \(index)"])
        }
    }

    @Test func aSubscriberThatStopsReadingIsCutOff() async throws {
        let stack = try await ServicesFixture.shared.value
        // An instance of its own, that gives up on a reader after 1 s.
        let (realtime, subscribers) = try await Self.ownRealtime(stack, ["SESSIONS_HTTP_IDLE_TIMEOUT_SECONDS": "1"])
        let session = try await stack.createSession()
        let request =
            "GET /realtime/v1/sessions/\(session.id)/out HTTP/1.1\r\nHost: x\r\n"
            + "Authorization: Bearer \(stack.apiKey)\r\nTimeout-Seconds: 600\r\n\r\n"
        let reader = try Self.connectWithoutReading(port: realtime.port, request)
        defer { close(reader) }
        // Beside it, one that reads steadily at about 2 MB/s, well behind the appends: it gets
        // every record and is not cut off.
        let slow = try Self.connectWithoutReading(port: realtime.port, request)
        defer { close(slow) }
        #expect(try await TestServers.waitUntil { try await subscribers() == 2 })
        let records = 16
        let slowRead = Task.detached { Self.readSlowly(slow, until: records * 500 * 1024) }
        // More than the socket buffers between the two hold.
        for _ in 0..<records {
            #expect(try await stack.append(session.id, String(repeating: "s", count: 500 * 1024)).status == 200)
        }
        let cutOff = try await TestServers.waitUntil(timeout: .seconds(20)) { try await subscribers() == 1 }
        #expect(cutOff, "the reader that took nothing for 1 s was disconnected")
        let (received, closed, _) = await slowRead.value
        #expect(!closed, "the steady reader got every record (\(received) bytes) and was not cut off")
        #expect(try await subscribers() == 1)
        #expect(try await realtime.terminate(timeout: .seconds(5)) == 0)
    }

    /// An S2 read cut off for falling behind ends with an `error` event, not `[DONE]`, which
    /// would tell the client that its read was complete (and a bare end, some clients too); S2
    /// clients retry an error from where they were.
    @Test func anS2ReadCutForFallingBehindDoesNotSayDone() async throws {
        let stack = try await ServicesFixture.shared.value
        let (realtime, subscribers) = try await Self.ownRealtime(stack, ["SESSIONS_SSE_BUFFER_RECORDS": "16"])
        let session = try await stack.createSession()
        let initialized = try await stack.http.execute(
            HTTPRequest(method: "PUT", url: stack.channelURL(session.id), headers: stack.auth)
        )
        let token = try #require(initialized.headers["X-S2-Access-Token"])
        let reader = try Self.connectWithoutReading(
            port: realtime.port,
            "GET /realtime/s2/v1/streams/sessions%2F\(session.id)%2Fout/records?seq_num=0&count=100000&wait=600 HTTP/1.1\r\n"
                + "Host: x\r\nAuthorization: Bearer \(token)\r\nAccept: text/event-stream\r\n\r\n"
        )
        defer { close(reader) }
        #expect(try await TestServers.waitUntil { try await subscribers() == 1 })
        for _ in 0..<40 {
            #expect(try await stack.append(session.id, String(repeating: "s", count: 300 * 1024)).status == 200)
        }
        let cutOff = try await TestServers.waitUntil(timeout: .seconds(20)) { try await subscribers() == 0 }
        #expect(cutOff, "the reader 16 records behind was disconnected")
        let (received, closed, last) = Self.readSlowly(reader, until: 64 << 20)
        #expect(closed && received > 1 << 20, "\(received) bytes")
        #expect(last.contains("event: error") && !last.contains("[DONE]"), "\(last.suffix(200))")
        #expect(try await realtime.terminate(timeout: .seconds(5)) == 0)
    }

    /// Every request is counted and timed by route, method and status; a stream once it ends,
    /// a refused request as an error too.
    @Test func requestsAreCountedAndTimedAndAStreamOnceItEnds() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let (realtime, _) = try await Self.ownRealtime(stack, [:])
        let headers: HTTPHeaders = ["Authorization": "Bearer \(stack.apiKey)"]
        let channel = realtime.baseURL + "/realtime/v1/sessions/\(session.id)/out"
        func count(_ name: String, _ route: String, _ method: String, _ status: Int) async throws -> Double? {
            let labels = #"http_route="/realtime/v1/sessions/{session}/{io}\#(route)",http_request_method="\#(method)""#
            return try await realtime.metric(
                #"\#(name){\#(labels),http_response_status_code="\#(status)"}"#,
                stack.http
            )
        }
        for body in ["a", "b"] {
            let response = try await stack.http.execute(
                HTTPRequest(method: "POST", url: channel + "/append", headers: headers, body: Data(body.utf8))
            )
            #expect(response.status == 200)
        }
        #expect(try await count("hb_requests", "/append", "POST", 200) == 2)
        #expect(try await count("http_server_request_duration_count", "/append", "POST", 200) == 2)
        #expect(try await count("hb_request_errors", "/append", "POST", 200) == 0)

        // The stream replays both records, then ends after a second without one.
        var streamHeaders = headers
        streamHeaders.add("Timeout-Seconds", "1")
        let stream = try await stack.http.execute(HTTPRequest(url: channel, headers: streamHeaders))
        #expect(stream.status == 200 && String(decoding: stream.body, as: UTF8.self).contains("id: 1"))
        #expect(try await TestServers.waitUntil { try await count("hb_requests", "", "GET", 200) == 1 })

        let missing = try await stack.http.execute(
            HTTPRequest(
                method: "POST",
                url: realtime.baseURL + "/realtime/v1/sessions/session_missing/out/append",
                headers: headers,
                body: Data("c".utf8)
            )
        )
        #expect(missing.status == 404)
        #expect(try await count("hb_request_errors", "/append", "POST", 404) == 1)
        #expect(try await realtime.metric(#"http_server_active_requests{http_request_method="POST"}"#, stack.http) == 0)
        #expect(try await realtime.terminate(timeout: .seconds(5)) == 0)
    }

    /// A realtime instance of the test's own, with `settings` on top of the fixture's, and a
    /// reading of its `realtime_sse_subscribers` gauge.
    static func ownRealtime(
        _ stack: ServicesFixture,
        _ settings: [String: String]
    ) async throws -> (ServiceProcess, subscribers: @Sendable () async throws -> Int?) {
        let realtime = try ServiceProcess(
            .realtime,
            extraEnvironment: ServicesFixture.realtimeEnvironment.merging(settings) { $1 }
        )
        try realtime.start()
        #expect(try await realtime.waitUntilReady(stack.http), "\(realtime.output)")
        return (
            realtime,
            { try await realtime.metric("realtime_sse_subscribers", stack.http).map { Int($0) } }
        )
    }

    /// Reads 64 KiB every 30 ms until `count` bytes came; returns how many did, whether the
    /// server closed the connection (or it fell silent for 10 s) first, and the last 4 KiB read.
    static func readSlowly(_ descriptor: Int32, until count: Int) -> (received: Int, closed: Bool, last: String) {
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var last: [UInt8] = []
        var received = 0
        while received < count {
            var chunk = 0
            while chunk < buffer.count {
                let read = recv(descriptor, &buffer, buffer.count - chunk, 0)
                guard read > 0 else { return (received + chunk, true, String(decoding: last, as: UTF8.self)) }
                last = Array((last + buffer[0..<read]).suffix(4096))
                chunk += read
            }
            received += chunk
            usleep(30_000)
        }
        return (received, false, String(decoding: last, as: UTF8.self))
    }

    /// A connection with a receive buffer of a few KiB that sends `request` and never reads.
    static func connectWithoutReading(port: Int, _ request: String) throws -> Int32 {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw POSIXError(.EMFILE) }
        var size: Int32 = 4096
        setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var address = TestServers.loopbackAddress(port: port)
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        let bytes = Array(request.utf8)
        guard connected, send(descriptor, bytes, bytes.count, 0) == bytes.count else {
            close(descriptor)
            throw POSIXError(.ECONNREFUSED)
        }
        return descriptor
    }

    /// A client that sends `Expect: 100-continue` (curl does, for bodies over 1 MiB) is told to
    /// go on at once instead of waiting out its own timeout before it sends the body.
    @Test func anAppendThatExpectsContinueIsToldToGoOn() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let port = try #require(URLComponents(string: stack.channelURL(session.id))?.port)
        let descriptor = try Self.connectWithoutReading(
            port: port,
            "POST /realtime/v1/sessions/\(session.id)/out/append HTTP/1.1\r\nHost: x\r\n"
                + "Authorization: Bearer \(stack.apiKey)\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        defer { close(descriptor) }
        #expect(Self.receive(descriptor, until: "\r\n\r\n").hasPrefix("HTTP/1.1 100 Continue\r\n"))
        _ = send(descriptor, "hello", 5, 0)
        let answer = Self.receive(descriptor, until: "}")
        #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n") && answer.contains(#""ok":true"#), "\(answer)")
    }

    /// What arrives on `descriptor` until it holds `end` (or 10 s pass, or the connection ends).
    static func receive(_ descriptor: Int32, until end: String) -> String {
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var received: [UInt8] = []
        var byte: UInt8 = 0
        while !String(decoding: received, as: UTF8.self).hasSuffix(end), recv(descriptor, &byte, 1, 0) == 1 {
            received.append(byte)
        }
        return String(decoding: received, as: UTF8.self)
    }

    @Test func badRequestsGetClearErrors() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let url = stack.channelURL(session.id)
        for value in ["10abc", "0", "601", "-1", "+5", "1.5"] {
            let response = try await stack.http.execute(
                HTTPRequest(url: url, headers: ["Authorization": "Bearer \(stack.apiKey)", "Timeout-Seconds": value])
            )
            #expect(response.status == 400, "Timeout-Seconds \(value)")
            #expect(String(decoding: response.body, as: UTF8.self).contains("Timeout-Seconds"))
        }
        for value in ["abc", "4,abc", "4,1", "4,,", "1,2,3,4", "4,-1,0"] {
            let badID = try await stack.http.execute(
                HTTPRequest(url: url, headers: ["Authorization": "Bearer \(stack.apiKey)", "Last-Event-ID": value])
            )
            #expect(badID.status == 400, "Last-Event-ID \(value)")
        }
        // The stream names the session its name led to (an externalId may move between sessions).
        let named = try await stack.http.execute(
            HTTPRequest(url: url, headers: ["Authorization": "Bearer \(stack.apiKey)", "Timeout-Seconds": "1"])
        )
        #expect(named.headers["X-Session-Id"] == session.id)
        let badIO = try await stack.append(session.id, "x", io: "sideways")
        #expect(badIO.status == 400)
        #expect(String(decoding: badIO.body, as: UTF8.self).contains("out or in"))
        let tooLarge = try await stack.append(session.id, String(repeating: "x", count: 512 * 1024 + 1))
        #expect(tooLarge.status == 413)
        let largest = try await stack.append(session.id, String(repeating: "x", count: 512 * 1024))
        #expect(largest.status == 200)
        // Within the body limit, but six times that once escaped as JSON: more than S2 keeps.
        let escaped = try await stack.append(session.id, String(repeating: "\u{1}", count: 512 * 1024))
        #expect(escaped.status == 413)
        #expect(String(decoding: escaped.body, as: UTF8.self).contains("escaped"))
        // Not UTF-8: a stray byte, and a sequence cut short (which a lenient decoder turns into
        // U+FFFD of the same length).
        for bytes: [UInt8] in [[0x61, 0xFF, 0x62], [0x61, 0x62, 0xF0, 0x9F, 0x98, 0x63, 0x64]] {
            let invalid = try await stack.http.execute(
                HTTPRequest(
                    method: "POST",
                    url: url + "/append",
                    headers: ["Authorization": "Bearer \(stack.apiKey)"],
                    body: Data(bytes)
                )
            )
            #expect(invalid.status == 400, "\(bytes)")
            #expect(String(decoding: invalid.body, as: UTF8.self).contains("UTF-8"))
        }
        // An X-Part-Id that is not UTF-8 is refused: read as text, different ones would be one.
        let path = "/realtime/v1/sessions/\(session.id)/out/append"
        for partId: [UInt8] in [[0xFF, 0xFE], [0xFE, 0xFF]] {
            let head = "POST \(path) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(stack.apiKey)\r\n"
            let request =
                Array(head.utf8) + Array("X-Part-Id: ".utf8) + partId
                + Array("\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx".utf8)
            let (response, _) = try await EnvironmentCommandTests.exchange(port: stack.realtime[0].port, request)
            #expect(response.hasPrefix("HTTP/1.1 400") && response.contains("UTF-8"), "\(response)")
        }
        let missing = try await stack.append("session_doesnotexist", "x")
        #expect(missing.status == 404)
        let unauthenticated = try await stack.http.execute(HTTPRequest(url: url))
        #expect(unauthenticated.status == 401)
        #expect(unauthenticated.headers["X-Request-Id"] != nil)
        let preflight = try await stack.http.execute(HTTPRequest(method: "OPTIONS", url: url + "/append"))
        #expect(preflight.status == 204 || preflight.status == 200)
        #expect(preflight.headers["Access-Control-Allow-Methods"]?.contains("POST") == true)
    }

    @Test func sessionTokensReachTheirOwnSessionOnly() async throws {
        let stack = try await ServicesFixture.shared.value
        let mine = try await stack.createSession()
        let other = try await stack.createSession()
        #expect(try await stack.append(mine.id, "mine", token: mine.token).status == 200)
        let foreign = try await stack.append(other.id, "theirs", token: mine.token)
        #expect(foreign.status == 403)
        let unknown = try await stack.append("session_nosuchsession", "x", token: mine.token)
        #expect(unknown.status == 403, "403 whether or not the session exists")
        let read = try await stack.subscribe(mine.id, token: mine.token)
        #expect(read.status == 200 && read.events.flatMap(\.records).count == 1)
        #expect(try await stack.subscribe(other.id, token: mine.token).status == 403)
    }
}
