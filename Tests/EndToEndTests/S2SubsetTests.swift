import Contracts
import Foundation
import HTTPClient
import TestSupport
import Testing

/// The S2 REST subset realtime serves for direct writers, with the channel token from `PUT`.
@Suite(.timeLimit(.minutes(2))) struct S2SubsetTests {
    struct Initialized {
        var token: String
        var streamName: String
        var endpoint: String
    }

    func initialize(_ stack: ServicesFixture, _ session: String, io: String = "out") async throws -> Initialized {
        let response = try await stack.http.execute(
            HTTPRequest(method: "PUT", url: stack.channelURL(session, io), headers: stack.auth)
        )
        #expect(response.status == 202)
        #expect(String(decoding: response.body, as: UTF8.self) == #"{"version":"v2"}"#)
        #expect(response.headers["X-S2-Basin"] == "sessions")
        #expect(response.headers["X-S2-Flush-Interval-Ms"] == "100")
        #expect(response.headers["X-S2-Max-Retries"] == "10")
        #expect(response.headers["Access-Control-Expose-Headers"]?.contains("X-S2-Access-Token") == true)
        return Initialized(
            token: try #require(response.headers["X-S2-Access-Token"]),
            streamName: try #require(response.headers["X-S2-Stream-Name"]),
            endpoint: try #require(response.headers["X-S2-Endpoint"])
        )
    }

    /// Every event of an S2 SSE read of `url`, which ends on its own (`wait`, `count`).
    func streamed(
        _ stack: ServicesFixture,
        _ url: String,
        token: String,
        lastEventID: String? = nil
    ) async throws -> [ServerSentEvent] {
        var headers: HTTPHeaders = ["Authorization": "Bearer \(token)", "Accept": "text/event-stream"]
        if let lastEventID { headers.add("Last-Event-ID", lastEventID) }
        let response = try await stack.http.stream(HTTPRequest(url: url, headers: headers, timeout: .seconds(20)))
        var parser = ServerSentEventParser()
        var events: [ServerSentEvent] = []
        for try await chunk in response.body { events += parser.feed(chunk) }
        return events
    }

    func recordsURL(_ stack: ServicesFixture, _ streamName: String, instance: Int = 0) -> String {
        let encoded = streamName.addingPercentEncoding(
            withAllowedCharacters: .alphanumerics.union(.init(charactersIn: "_-"))
        )!
        return stack.realtime[instance].baseURL + "/realtime/s2/v1/streams/\(encoded)/records"
    }

    @Test func aDirectWriterAppendsAndReadsItsChannel() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let channel = try await initialize(stack, session.id)
        #expect(channel.streamName == "sessions/\(session.id)/out")
        #expect(channel.endpoint.hasSuffix("/realtime/s2/v1"), "S2 clients take the path as given")
        let url = recordsURL(stack, channel.streamName)
        let auth: HTTPHeaders = ["Authorization": "Bearer \(channel.token)", "Content-Type": "application/json"]

        let append = try await stack.http.execute(
            HTTPRequest(
                method: "POST",
                url: url,
                headers: auth,
                body: Data(#"{"records":[{"body":"a"},{"body":"b"}]}"#.utf8)
            )
        )
        #expect(append.status == 200)
        let ack = try JSONDecoder().decode([String: Position].self, from: append.body)
        #expect(ack["start"]?.seq_num == 0 && ack["end"]?.seq_num == 2)

        let conditional = try await stack.http.execute(
            HTTPRequest(
                method: "POST",
                url: url,
                headers: auth,
                body: Data(#"{"records":[{"body":"c"}],"match_seq_num":1}"#.utf8)
            )
        )
        #expect(conditional.status == 412)
        #expect(String(decoding: conditional.body, as: UTF8.self) == #"{"seq_num_mismatch":2}"#)

        let base64 = try await stack.http.execute(
            HTTPRequest(
                method: "POST",
                url: url,
                headers: ["Authorization": "Bearer \(channel.token)", "S2-Format": "base64"],
                body: Data(#"{"records":[{"body":"Yw=="}],"match_seq_num":2}"#.utf8)
            )
        )
        #expect(base64.status == 200)

        let read = try await stack.http.execute(
            HTTPRequest(url: url + "?seq_num=1&count=5", headers: auth, timeout: .seconds(5))
        )
        #expect(read.status == 200)
        let batch = try JSONDecoder().decode(ReadBatch.self, from: read.body)
        #expect(batch.records.map(\.body) == ["b", "c"])
        #expect(batch.records.map(\.seqNum) == [1, 2])
        #expect(batch.tail?.seq_num == 3)

        let tail = try await stack.http.execute(HTTPRequest(url: url + "/tail", headers: auth))
        #expect(String(decoding: tail.body, as: UTF8.self).contains(#""seq_num":3"#))

        let beyond = try await stack.http.execute(HTTPRequest(url: url + "?seq_num=9", headers: auth))
        #expect(beyond.status == 416)
        let clamped = try await stack.http.execute(HTTPRequest(url: url + "?seq_num=9&clamp=true", headers: auth))
        #expect(clamped.status == 200)
        let vague = try await stack.http.execute(HTTPRequest(url: url + "?seq_num=9&clamp=maybe", headers: auth))
        #expect(vague.status == 400, "not silently false")

        // The sessions API sees the same records, and so do SSE readers of the S2 subset.
        let viaSessions = try await stack.subscribe(session.id).events.flatMap(\.records)
        #expect(viaSessions.map(\.body) == ["a", "b", "c"])
        var events = try await streamed(stack, url + "?seq_num=0&wait=2", token: channel.token)
        #expect(events.flatMap(\.records).map(\.seqNum) == [0, 1, 2])
        #expect(events.first { $0.event == "batch" }?.id == "2,3,27")
        #expect(events.last?.data == "[DONE]")
        // Idle at the tail, pings carry it (S2 clients take `last + 1 == tail` as caught up).
        let last = try #require(events.flatMap(\.records).last)
        let ping = try #require(events.first { $0.event == "ping" }, "SESSIONS_SSE_PING_SECONDS=1 in the fixture")
        let tailed = try JSONDecoder().decode(Ping.self, from: Data(ping.data.utf8))
        #expect(tailed.tail?.seq_num == 3 && tailed.tail?.timestamp == last.timestamp, "\(ping.data)")

        // A bounded read resumed after its first record sends the other two, counting on.
        let streamHeaders: HTTPHeaders = ["Authorization": "Bearer \(channel.token)", "Accept": "text/event-stream"]
        events = try await streamed(
            stack,
            url + "?seq_num=0&count=3&wait=1",
            token: channel.token,
            lastEventID: "0,1,9"
        )
        #expect(events.flatMap(\.records).map(\.seqNum) == [1, 2])
        #expect(events.first { $0.event == "batch" }?.id == "2,3,27")
        for bad in ["0,-1,0", "0,-9223372036854775808,0", "0,1,2,3", "0,x,0", "0,1,-5"] {
            var headers = streamHeaders
            headers.add("Last-Event-ID", bad)
            let refused = try await stack.http.execute(
                HTTPRequest(url: url + "?seq_num=0&count=9223372036854775807&wait=1", headers: headers)
            )
            #expect(refused.status == 400, "Last-Event-ID \(bad)")
        }
    }

    /// `wait=0` reads what is there and ends: Trigger.dev's drain and its "settled" read use it to
    /// get the channel's records without waiting. Appends keep coming here, so a read that waited
    /// for a quiet second instead would not end.
    @Test func anSSEReadWithoutWaitEndsAtTheTail() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let channel = try await initialize(stack, session.id)
        for index in 0..<2 { _ = try await stack.appended(session.id, "before\(index)") }
        let appender = Task {
            var index = 0
            while !Task.isCancelled {
                _ = try await stack.appended(session.id, "during\(index)")
                index += 1
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        defer { appender.cancel() }
        let url = recordsURL(stack, channel.streamName)
        var events = try await streamed(stack, url + "?seq_num=0&wait=0", token: channel.token)
        let seqNums = events.flatMap(\.records).map(\.seqNum)
        #expect(seqNums.count >= 2 && seqNums == Array(0..<UInt64(seqNums.count)), "\(seqNums)")
        #expect(events.last?.data == "[DONE]")
        // From the tail itself: nothing, and done.
        events = try await streamed(stack, url + "?tail_offset=0&wait=0", token: channel.token)
        #expect(events.flatMap(\.records).isEmpty && events.last?.data == "[DONE]", "\(events)")
    }

    @Test func aChannelTokenCannotTouchAnotherChannel() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let other = try await stack.createSession()
        let channel = try await initialize(stack, session.id)
        let auth: HTTPHeaders = ["Authorization": "Bearer \(channel.token)"]
        for name in ["sessions/\(session.id)/in", "sessions/\(other.id)/out"] {
            let append = try await stack.http.execute(
                HTTPRequest(
                    method: "POST",
                    url: recordsURL(stack, name),
                    headers: auth,
                    body: Data(#"{"records":[{"body":"x"}]}"#.utf8)
                )
            )
            #expect(append.status == 403, "\(name)")
            #expect(String(decoding: append.body, as: UTF8.self).contains("permission_denied"))
            let read = try await stack.http.execute(HTTPRequest(url: recordsURL(stack, name), headers: auth))
            #expect(read.status == 403)
        }
        let forged = try await stack.http.execute(
            HTTPRequest(
                url: recordsURL(stack, channel.streamName),
                headers: ["Authorization": "Bearer \(stack.apiKey)"]
            )
        )
        #expect(forged.status == 401, "an API key is not a channel token")
        #expect(String(decoding: forged.body, as: UTF8.self).contains("authn"))
        let none = try await stack.http.execute(HTTPRequest(url: recordsURL(stack, channel.streamName)))
        #expect(none.status == 401)
        // The token works on every instance: they share the signing secret.
        let elsewhere = try await stack.http.execute(
            HTTPRequest(url: recordsURL(stack, channel.streamName, instance: 1) + "/tail", headers: auth)
        )
        #expect(elsewhere.status == 200)
    }

    /// An S2 writer's records keep their headers and bytes: control records (empty body,
    /// headers) and a `trim` command (8 bytes, base64) read back as written, in both formats,
    /// on the S2 subset and on the sessions SSE route.
    @Test func headersCommandRecordsAndBytesReadBackAsWritten() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let channel = try await initialize(stack, session.id)
        let url = recordsURL(stack, channel.streamName)
        let auth: HTTPHeaders = ["Authorization": "Bearer \(channel.token)", "Content-Type": "application/json"]
        let control = #"{"records":[{"body":"","headers":[["trigger-control","turn-complete"],["k","ü"]]}]}"#
        let raw = try await stack.http.execute(
            HTTPRequest(method: "POST", url: url, headers: auth, body: Data(control.utf8))
        )
        #expect(raw.status == 200, "\(String(decoding: raw.body, as: UTF8.self))")
        let trim = Data([0, 0, 0, 0, 0, 0, 0, 200]).base64EncodedString()
        let binary = Data([0xFF, 0x00, 0xC8]).base64EncodedString()
        let commands = #"{"records":[{"body":"\#(trim)","headers":[["","dHJpbQ=="]]},{"body":"\#(binary)"}]}"#
        var base64Auth = auth
        base64Auth.add("S2-Format", "base64")
        let encoded = try await stack.http.execute(
            HTTPRequest(method: "POST", url: url, headers: base64Auth, body: Data(commands.utf8))
        )
        #expect(encoded.status == 200, "\(String(decoding: encoded.body, as: UTF8.self))")

        struct Read: Decodable {
            struct Record: Decodable {
                var body: String
                var headers: [[String]]
            }
            var records: [Record]
        }
        let asRaw = try JSONDecoder().decode(
            Read.self,
            from: try await stack.http.execute(HTTPRequest(url: url + "?seq_num=0", headers: auth)).body
        )
        #expect(
            asRaw.records.map(\.headers) == [
                [["trigger-control", "turn-complete"], ["k", "ü"]], [["", "trim"]], [],
            ]
        )
        let asBase64 = try JSONDecoder().decode(
            Read.self,
            from: try await stack.http.execute(HTTPRequest(url: url + "?seq_num=0", headers: base64Auth)).body
        )
        #expect(asBase64.records.map(\.body) == ["", trim, binary], "bytes as written")
        #expect(asBase64.records[1].headers == [["", "dHJpbQ=="]])
        // The sessions route shows the headers too (readers skip command records by them).
        let events = try await stack.subscribe(session.id).events
        let batch = try #require(events.first { $0.event == "batch" })
        #expect(batch.data.contains(#""headers":[["trigger-control","turn-complete"],["k","ü"]]"#), "\(batch.data)")
        #expect(batch.data.contains(#""headers":[["","trim"]]"#))
        // Metered as S2 does: 8 + 2 per header + names, values and body.
        let read = try await streamed(stack, url + "?seq_num=0&count=3", token: channel.token)
        let metered = (8 + 4 + 15 + 13 + 1 + 2) + (8 + 2 + 4 + 8) + (8 + 3)
        #expect(read.last { $0.event == "batch" }?.id == "2,3,\(metered)")
    }

    @Test func badAppendsGetS2Errors() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let channel = try await initialize(stack, session.id)
        let url = recordsURL(stack, channel.streamName)
        let auth: HTTPHeaders = ["Authorization": "Bearer \(channel.token)"]
        let cases: [(String, Int, String)] = [
            ("not json", 400, "bad_json"),
            (#"{"records":[]}"#, 422, "invalid"),
            (#"{"records":[{"body":"x","headers":[["k"]]}]}"#, 422, "invalid"),
            (#"{"records":[{"body":"t","headers":[["","fence"]]}]}"#, 422, "invalid"),
            (#"{"records":[{"body":"t","headers":[["","trim"],["k","v"]]}]}"#, 422, "invalid"),
            (#"{"records":[{"body":"t","headers":[["","compact"]]}]}"#, 422, "invalid"),
            (#"{"records":[{"body":"x"}],"fencing_token":"f"}"#, 422, "invalid"),
            // A record's own timestamp is not taken, but one that is not a timestamp is refused.
            (#"{"records":[{"body":"x","timestamp":"soon"}]}"#, 400, "bad_json"),
            (#"{"records":[{"body":"x","timestamp":-5}]}"#, 400, "bad_json"),
            // Headers past what a JetStream message holds: refused, not a store "unavailable".
            (Self.recordWithHeaderValue(length: 47_095), 422, "invalid"),
        ]
        for (body, status, code) in cases {
            let response = try await stack.http.execute(
                HTTPRequest(method: "POST", url: url, headers: auth, body: Data(body.utf8))
            )
            #expect(response.status == status, "\(body)")
            #expect(String(decoding: response.body, as: UTF8.self).contains(#""code":"\#(code)""#), "\(body)")
        }
        // Headers of exactly the most a record may have (46 KiB as JSON) are stored.
        let largest = try await stack.http.execute(
            HTTPRequest(
                method: "POST",
                url: url,
                headers: auth,
                body: Data(Self.recordWithHeaderValue(length: 47_094).utf8)
            )
        )
        #expect(largest.status == 200)
        let query = try await stack.http.execute(HTTPRequest(url: url + "?seq_num=1&tail_offset=1", headers: auth))
        #expect(query.status == 400)
        // The empty fencing token is every stream's until a fence sets one.
        let unfenced = try await stack.http.execute(
            HTTPRequest(
                method: "POST",
                url: url,
                headers: auth,
                body: Data(#"{"records":[{"body":"x"}],"fencing_token":""}"#.utf8)
            )
        )
        #expect(unfenced.status == 200)
        // The SDKs' binary transports are not served: said so, in S2's format, rather than
        // misread (a protobuf append was a JSON error; a protobuf read got JSON).
        var protobuf = auth
        protobuf.add("Content-Type", "application/x-protobuf")
        let binaryAppend = try await stack.http.execute(
            HTTPRequest(method: "POST", url: url, headers: protobuf, body: Data([0x0A, 0x01, 0x78]))
        )
        #expect(binaryAppend.status == 415 && String(decoding: binaryAppend.body, as: UTF8.self).contains("bad_header"))
        var acceptProtobuf = auth
        acceptProtobuf.add("Accept", "application/protobuf")
        let binaryRead = try await stack.http.execute(HTTPRequest(url: url + "?seq_num=0", headers: acceptProtobuf))
        #expect(binaryRead.status == 406)
    }

    /// An append of one record with one header whose value is `length` letters: its headers
    /// take `length` + 10 bytes as JSON (`[["k","…"]]`).
    static func recordWithHeaderValue(length: Int) -> String {
        #"{"records":[{"body":"h","headers":[["k",""# + String(repeating: "v", count: length) + #""]]}]}"#
    }

    /// A channel token lasts no longer than the credential that asked for it: a public access
    /// token of an hour does not buy a day of writing. A secret key's lasts its full day.
    @Test func aChannelTokenExpiresNoLaterThanItsCallersToken() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        func expiry(_ jwt: String) throws -> Double {
            var payload = String(jwt.split(separator: ".")[1])
                .replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            while payload.count % 4 != 0 { payload += "=" }
            let claims = try JSONSerialization.jsonObject(with: Data(base64Encoded: payload)!) as! [String: Any]
            return try #require(claims["exp"] as? Double)
        }
        let byToken = try await stack.http.execute(
            HTTPRequest(
                method: "PUT",
                url: stack.channelURL(session.id),
                headers: ["Authorization": "Bearer \(session.token)"]
            )
        )
        #expect(byToken.status == 202)
        let channelToken = try #require(byToken.headers["X-S2-Access-Token"])
        #expect(try expiry(channelToken) <= expiry(session.token))
        let byKey = try await initialize(stack, session.id)
        #expect(try expiry(byKey.token) >= Date().timeIntervalSince1970 + 86_000, "a secret key's: a day")
    }

    /// A channel token grants no more than its caller has: one asked for with a write-only
    /// token appends and checks the tail, but does not read the channel.
    @Test func aWriteOnlyCallersChannelTokenDoesNotRead() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        _ = try await stack.appended(session.id, "private")
        let writeOnly = try await AccessTokenFixture.token(stack, scopes: ["write:sessions:\(session.id)"])
        let put = try await stack.http.execute(
            HTTPRequest(
                method: "PUT",
                url: stack.channelURL(session.id),
                headers: ["Authorization": "Bearer \(writeOnly)"]
            )
        )
        #expect(put.status == 202)
        let token = try #require(put.headers["X-S2-Access-Token"])
        let url = recordsURL(stack, try #require(put.headers["X-S2-Stream-Name"]))
        let auth: HTTPHeaders = ["Authorization": "Bearer \(token)"]
        let append = try await stack.http.execute(
            HTTPRequest(method: "POST", url: url, headers: auth, body: Data(#"{"records":[{"body":"w"}]}"#.utf8))
        )
        #expect(append.status == 200)
        #expect(try await stack.http.execute(HTTPRequest(url: url + "/tail", headers: auth)).status == 200)
        let read = try await stack.http.execute(HTTPRequest(url: url + "?seq_num=0", headers: auth))
        #expect(read.status == 403 && String(decoding: read.body, as: UTF8.self).contains("permission_denied"))
        // The session's own token reads and writes, and so does its channel token.
        let both = try await stack.http.execute(
            HTTPRequest(
                method: "PUT",
                url: stack.channelURL(session.id),
                headers: ["Authorization": "Bearer \(session.token)"]
            )
        )
        let reading: HTTPHeaders = ["Authorization": "Bearer \(try #require(both.headers["X-S2-Access-Token"]))"]
        #expect(try await stack.http.execute(HTTPRequest(url: url + "?seq_num=0", headers: reading)).status == 200)
    }

    /// Reads end, follow and fail as S2's do: a bounded read without `wait` ends at the tail; a
    /// heartbeat with the tail goes out as soon as a read catches up; `count=0` and any `wait`
    /// are taken; a unary read answers at most 1 MiB.
    @Test func readsEndFollowAndCatchUpAsS2Does() async throws {
        let stack = try await ServicesFixture.shared.value
        let session = try await stack.createSession()
        let channel = try await initialize(stack, session.id)
        let url = recordsURL(stack, channel.streamName)
        let auth: HTTPHeaders = ["Authorization": "Bearer \(channel.token)"]
        for body in ["a", "b", "c"] { _ = try await stack.appended(session.id, body) }

        // A limit and no wait: what is there, then [DONE] (it used to follow until the client left).
        var events = try await streamed(stack, url + "?seq_num=0&count=100", token: channel.token)
        #expect(events.flatMap(\.records).map(\.seqNum) == [0, 1, 2])
        #expect(events.last?.data == "[DONE]")
        // Caught up: a heartbeat with the tail right after the batch that reached it. (With the
        // fixture's 1 s pings and wait=1, the idle end came first and no heartbeat went out.)
        events = try await streamed(stack, url + "?seq_num=0&wait=1", token: channel.token)
        #expect(events.map(\.event) == ["batch", "ping", nil], "\(events)")
        let caughtUp = try JSONDecoder().decode(Ping.self, from: Data(events[1].data.utf8))
        #expect(caughtUp.tail?.seq_num == 3)
        events = try await streamed(stack, url + "?seq_num=0&count=0", token: channel.token)
        #expect(events.map(\.data) == ["[DONE]"])
        let none = try await stack.http.execute(HTTPRequest(url: url + "?seq_num=0&count=0", headers: auth))
        #expect(none.status == 200)
        #expect(try JSONDecoder().decode(ReadBatch.self, from: none.body).records.isEmpty)
        let longWait = try await stack.http.execute(HTTPRequest(url: url + "?seq_num=0&wait=3600", headers: auth))
        #expect(longWait.status == 200, "any wait is taken (a unary read waits at most 60 s)")

        // The other bounds: metered bytes (8 + the body's), an exclusive timestamp, and a start
        // at a timestamp.
        let all = try JSONDecoder().decode(
            ReadBatch.self,
            from: try await stack.http.execute(HTTPRequest(url: url + "?seq_num=0", headers: auth)).body
        ).records
        func read(_ query: String) async throws -> [UInt64] {
            let response = try await stack.http.execute(HTTPRequest(url: url + "?" + query, headers: auth))
            #expect(response.status == 200, "\(query): \(String(decoding: response.body, as: UTF8.self))")
            return try JSONDecoder().decode(ReadBatch.self, from: response.body).records.map(\.seqNum)
        }
        let two = all[0...1].reduce(0) { $0 + 8 + $1.body.utf8.count }
        #expect(try await read("seq_num=0&bytes=\(two)") == [0, 1])
        #expect(try await read("seq_num=0&bytes=\(two - 1)") == [0])
        #expect(try await read("seq_num=0&bytes=0") == [])
        events = try await streamed(stack, url + "?seq_num=0&bytes=\(two)", token: channel.token)
        #expect(events.flatMap(\.records).map(\.seqNum) == [0, 1])
        #expect(events.last?.data == "[DONE]", "a bytes bound ends the read: it does not follow")
        let until = all[2].timestamp
        let before = all.filter { $0.timestamp < until }.map(\.seqNum)
        #expect(try await read("seq_num=0&until=\(until)") == before)
        events = try await streamed(stack, url + "?seq_num=0&until=\(until)", token: channel.token)
        #expect(events.flatMap(\.records).map(\.seqNum) == before)
        let from = all[1].timestamp
        let firstAtOrAfter = try #require(all.first { $0.timestamp >= from }).seqNum
        #expect(try await read("timestamp=\(from)").first == firstAtOrAfter)
        #expect(try await read("timestamp=\(Int64.max / 2)&wait=0") == [], "after the last record: the tail")

        for _ in 0..<4 { _ = try await stack.appended(session.id, String(repeating: "x", count: 300_000)) }
        let large = try await stack.http.execute(HTTPRequest(url: url + "?seq_num=3", headers: auth))
        let batch = try JSONDecoder().decode(ReadBatch.self, from: large.body)
        #expect(batch.records.map(\.seqNum) == [3, 4, 5], "three of the four fit in 1 MiB")
    }

    struct Position: Decodable {
        var seq_num: UInt64
        var timestamp: Int64
    }

    struct Ping: Decodable {
        var timestamp: Int64
        var tail: Position?
    }

    struct ReadBatch: Decodable {
        var records: [SSERecord]
        var tail: Position?
    }
}
