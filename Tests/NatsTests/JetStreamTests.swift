import Foundation
import TestSupport
import Testing

@testable import Nats

@Suite(.timeLimit(.minutes(1))) struct JetStreamTests {
    /// A fresh stream over `<prefix>.>` for one test, deleted afterwards.
    func withStream(
        allowAtomic: Bool = false,
        _ body: (JetStream, String, String) async throws -> Void
    ) async throws {
        let connection = try await connect("jetstream-tests")
        try await waitConnected(connection)
        let jetStream = try JetStream(connection: connection)
        let name = TestServers.uniqueName("TEST").uppercased()
        let prefix = name.lowercased()
        let info = try await jetStream.createOrUpdateStream(
            StreamConfiguration(name: name, subjects: ["\(prefix).>"], allowAtomic: allowAtomic)
        )
        #expect(info.config.name == name)
        #expect(info.config.allowDirect)
        do {
            try await body(jetStream, name, prefix)
        } catch {
            try? await jetStream.deleteStream(name)
            throw error
        }
        try await jetStream.deleteStream(name)
        await connection.close()
    }

    /// Starting again keeps what an operator tuned on the stream (here its age limit and a
    /// size limit this code does not know), and still applies what the code owns (subjects).
    @Test func createIsIdempotentAndKeepsWhatOperatorsTuned() async throws {
        try await withStream { jetStream, name, prefix in
            let again = try await jetStream.createOrUpdateStream(
                StreamConfiguration(name: name, subjects: ["\(prefix).>"])
            )
            #expect(again.config.subjects == ["\(prefix).>"])
            // `nats stream edit --max-age 30d --max-bytes 1GB`, as an operator would.
            let connection = try await connect("operator")
            let info = try await connection.request("$JS.API.STREAM.INFO.\(name)", payload: Data())
            var config = try #require(
                (try JSONSerialization.jsonObject(with: info.payload) as? [String: Any])?["config"] as? [String: Any]
            )
            config["max_age"] = 2_592_000_000_000_000
            config["max_bytes"] = 1 << 30
            let edited = try await connection.request(
                "$JS.API.STREAM.UPDATE.\(name)",
                payload: try JSONSerialization.data(withJSONObject: config)
            )
            #expect(!String(decoding: edited.payload, as: UTF8.self).contains("error"))
            await connection.close()

            // Updates written, seen as a bystander.
            let watcher = try await connect("watcher")
            let updates = try watcher.subscribe("$JS.API.STREAM.UPDATE.\(name)")
            try await watcher.flush()
            let restarted = try await jetStream.createOrUpdateStream(
                StreamConfiguration(name: name, subjects: ["\(prefix).>"])
            )
            #expect(restarted.config.maxAge == 2_592_000_000_000_000, "an operator's age limit survives a restart")
            let upgraded = try await jetStream.createOrUpdateStream(
                StreamConfiguration(name: name, subjects: ["\(prefix).>", "\(prefix)-more.>"])
            )
            #expect(upgraded.config.subjects == ["\(prefix).>", "\(prefix)-more.>"], "the code's subjects applied")
            #expect(upgraded.config.maxAge == 2_592_000_000_000_000)
            // Where the code owns the age limit (a stream that is the system of record), it is set.
            let owned = try await jetStream.createOrUpdateStream(
                StreamConfiguration(name: name, subjects: ["\(prefix).>", "\(prefix)-more.>"]),
                owningMaxAge: true
            )
            #expect(owned.config.maxAge == 0)
            try await watcher.flush()
            updates.unsubscribe()
            var written = 0
            for await _ in updates { written += 1 }
            #expect(written == 2, "the unchanged restart writes nothing; the new subject and the age limit do")
            await watcher.close()
            let raw = try await connect("check")
            let reread = try await raw.request("$JS.API.STREAM.INFO.\(name)", payload: Data())
            #expect(String(decoding: reread.payload, as: UTF8.self).contains(#""max_bytes":1073741824"#))
            await raw.close()
        }
    }

    @Test func expectedLastSubjectSequenceKeepsAChannelDense() async throws {
        try await withStream { jetStream, _, prefix in
            let subject = "\(prefix).channel"
            let first = try await jetStream.publish(subject, payload: Data("a".utf8), expectedLastSubjectSequence: 0)
            // A second "first" write loses: the subject is no longer empty.
            await #expect(throws: NatsError.self) {
                do {
                    _ = try await jetStream.publish(subject, payload: Data("b".utf8), expectedLastSubjectSequence: 0)
                } catch let error as NatsError {
                    #expect(error.jetStreamCode == NatsError.wrongLastSequence)
                    throw error
                }
            }
            let second = try await jetStream.publish(
                subject,
                payload: Data("b".utf8),
                expectedLastSubjectSequence: first.sequence
            )
            #expect(second.sequence > first.sequence)
            // Another subject's writes do not disturb this one's expectation.
            _ = try await jetStream.publish("\(prefix).other", payload: Data("x".utf8))
            let third = try await jetStream.publish(
                subject,
                payload: Data("c".utf8),
                expectedLastSubjectSequence: second.sequence
            )
            #expect(third.sequence == second.sequence + 2)
        }
    }

    @Test func publishAcknowledgementsAreReadWithoutTheDecoderAndAgreeWithIt() throws {
        for json in [
            #"{"stream":"sessions","seq":42}"#,
            #"{"stream":"s","domain":"hub","seq":7,"duplicate":true}"#,
            #"{"stream":"s","seq":18446744073709551615,"duplicate": false}"#,
            #"{ "stream" : "s" , "seq" : 3 , "duplicate": true }"#,
            // nats-server 2.12's tails: an atomic batch's, a counter's.
            #"{"stream":"s","seq":9,"batch":"b-1","count":3}"#,
            #"{"stream":"s","seq":0,"val":"10"}"#,
        ] {
            let payload = Data(json.utf8)
            let flat = try #require(PublishAck(flat: payload), "\(json)")
            #expect(flat == (try JSONDecoder().decode(PublishAck.self, from: payload)))
        }
        // As nats-server writes a duplicate's acknowledgement.
        #expect(PublishAck(flat: Data(#"{"stream":"s","seq":7,"duplicate": true}"#.utf8))?.duplicate == true)
        // Left to the decoder: an error, an escaped name, a nested value, no sequence, trailing
        // bytes, and what JSON does not allow or the decoder would not read as these fields.
        for json in [
            #"{"error":{"code":503,"err_code":10077,"description":"no space"}}"#,
            #"{"stream":"a\"b","seq":1}"#,
            #"{"stream":"s","seq":1,"batch":{"id":"x"}}"#,
            #"{"stream":"s"}"#,
            #"{"stream":"s","seq":1}x"#,
            #"{"stream":"s","seq":-1}"#,
            #"{"stream":"s","seq":+5}"#,
            #"{"stream":"s","seq":007}"#,
            #"{"stream":"s","seq":1,"duplicate":1}"#,
            #"{"stream":"s","seq":1,"duplicate":}"#,
            "{\"stream\":\"a\u{01}b\",\"seq\":1}",
        ] {
            #expect(PublishAck(flat: Data(json.utf8)) == nil, "\(json)")
        }
    }

    @Test func messageIDDeduplicates() async throws {
        try await withStream { jetStream, name, prefix in
            let first = try await jetStream.publish("\(prefix).dedupe", payload: Data("once".utf8), messageID: "part-1")
            let retry = try await jetStream.publish("\(prefix).dedupe", payload: Data("once".utf8), messageID: "part-1")
            #expect(!first.duplicate)
            #expect(retry.duplicate)
            #expect(retry.sequence == first.sequence)
            #expect(try await jetStream.streamInfo(name).state.messages == 1)
        }
    }

    /// A batch is stored whole, in order, or not at all: one holding a message id the stream
    /// has is refused whole. A batch of one is a plain publish, so a known id comes back as a
    /// duplicate (what the session-event relay relies on to publish again after a crash).
    @Test func anAtomicBatchIsStoredWholeOrRefusedWhole() async throws {
        try await withStream(allowAtomic: true) { jetStream, name, prefix in
            func batch(_ ids: String...) -> [JetStream.BatchMessage] {
                ids.map { .init(subject: "\(prefix).batch", payload: Data($0.utf8), headers: ["Nats-Msg-Id": $0]) }
            }
            #expect(try await jetStream.publishBatch(batch("a", "b", "c")).sequence == 3)
            let second = try #require(try await jetStream.directGet(stream: name, .sequence(2)))
            #expect(String(decoding: second.payload, as: UTF8.self) == "b")
            #expect(second.headers["Nats-Batch-Id"] != nil)

            do {
                _ = try await jetStream.publishBatch(batch("c", "d"))
                Issue.record("a batch with a known message id was stored")
            } catch let error as NatsError {
                #expect(error.code == .jetStream && error.jetStreamCode == 10201, "\(error)")
            }
            #expect(try await jetStream.streamInfo(name).state.messages == 3, "nothing of the refused batch")

            let single = try await jetStream.publishBatch(batch("b"))
            #expect(single.duplicate && single.sequence == 2)
            #expect(try await jetStream.publishBatch(batch("d", "e")).sequence == 5)
        }
    }

    @Test func directGetReadsBySequenceAndSubject() async throws {
        try await withStream { jetStream, name, prefix in
            let subject = "\(prefix).direct"
            var sequences: [UInt64] = []
            for index in 0..<3 {
                sequences.append(
                    try await jetStream.publish(
                        subject,
                        payload: Data("m\(index)".utf8),
                        headers: ["X-Index": "\(index)"]
                    ).sequence
                )
            }
            let last = try #require(try await jetStream.directGet(stream: name, .lastBySubject(subject)))
            #expect(String(decoding: last.payload, as: UTF8.self) == "m2")
            #expect(last.subject == subject)
            #expect(last.headers["X-Index"] == "2")
            #expect(last.metadata?.streamSequence == sequences[2])

            let bySequence = try #require(try await jetStream.directGet(stream: name, .sequence(sequences[0])))
            #expect(String(decoding: bySequence.payload, as: UTF8.self) == "m0")

            let next = try #require(
                try await jetStream.directGet(stream: name, .nextBySubject(subject, from: sequences[0] + 1))
            )
            #expect(next.metadata?.streamSequence == sequences[1])

            #expect(try await jetStream.directGet(stream: name, .lastBySubject("\(prefix).empty")) == nil)
        }
    }

    @Test func orderedConsumerReplaysFromASequenceThenFollows() async throws {
        try await withStream { jetStream, name, prefix in
            let subject = "\(prefix).ordered"
            for index in 0..<5 { _ = try await jetStream.publish(subject, payload: Data("e\(index)".utf8)) }
            let consumer = try jetStream.orderedConsumer(stream: name, subject: subject, deliver: .startSequence(3))
            var iterator = consumer.makeAsyncIterator()
            var received: [String] = []
            for _ in 0..<3 {
                let message = try #require(await iterator.next())
                received.append(String(decoding: message.payload, as: UTF8.self))
            }
            #expect(received == ["e2", "e3", "e4"])
            // Live: a message published now arrives next, with its stream position.
            let live = try await jetStream.publish(subject, payload: Data("live".utf8))
            let message = try #require(await iterator.next())
            #expect(String(decoding: message.payload, as: UTF8.self) == "live")
            #expect(message.metadata?.streamSequence == live.sequence)
            consumer.unsubscribe()
        }
    }

    @Test func aFetchHandsOverTheFirstMessageWithoutWaitingToFillItsBatch() async throws {
        try await withStream { jetStream, name, prefix in
            let subject = "\(prefix).trickle"
            let consumer = try await jetStream.pullConsumer(stream: name, durable: "trickle", filterSubject: subject)
            let fetch = Task { try await consumer.fetch(batch: 64, timeout: .seconds(30)) }
            // Published once the fetch's pull request waits on the server.
            let waiting = try await TestServers.waitUntil(timeout: .seconds(10)) {
                let info = try await jetStream.connection.request("$JS.API.CONSUMER.INFO.\(name).trickle")
                let object = try JSONSerialization.jsonObject(with: info.payload) as? [String: Any]
                return (object?["num_waiting"] as? Int ?? 0) > 0
            }
            #expect(waiting)
            let started = ContinuousClock.now
            _ = try await jetStream.publish(subject, payload: Data("alone".utf8))
            let fetched = try await fetch.value
            #expect(fetched.map { String(decoding: $0.message.payload, as: UTF8.self) } == ["alone"])
            // A fetch that held it until its batch of 64 was full would wait out its 30 s.
            #expect(ContinuousClock.now - started < .seconds(10))
            try fetched.forEach { try $0.ack() }

            // Several: a fetch takes what has come (up to its batch), in order; an empty consumer gives none.
            for index in 0..<5 { _ = try await jetStream.publish(subject, payload: Data("m\(index)".utf8)) }
            let burst = try await consumer.fetch(atLeast: 5, batch: 3)
            #expect(
                burst.map { String(decoding: $0.message.payload, as: UTF8.self) } == ["m0", "m1", "m2", "m3", "m4"]
            )
            try burst.forEach { try $0.ack() }
            #expect(try await consumer.fetch(batch: 64, timeout: .milliseconds(300)).isEmpty)
        }
    }

    /// Records that trickle in, one per fetch, cost one pull request per half budget rather
    /// than one each (with its end-of-request status back): the server's work per record.
    @Test func aTrickleOfMessagesSharesOneStandingPullRequest() async throws {
        try await withStream { jetStream, name, prefix in
            let subject = "\(prefix).standing"
            let requests = try jetStream.connection.subscribe("$JS.API.CONSUMER.MSG.NEXT.\(name).standing")
            let consumer = try await jetStream.pullConsumer(stream: name, durable: "standing", filterSubject: subject)
            for index in 0..<20 {
                _ = try await jetStream.publish(subject, payload: Data("t\(index)".utf8))
                let fetched = try await consumer.fetch(batch: 64, timeout: .seconds(5))
                #expect(fetched.map { String(decoding: $0.message.payload, as: UTF8.self) } == ["t\(index)"])
                try fetched.forEach { try $0.ack() }
            }
            // Every request is back from the server once a flush is; draining hands them over.
            try await jetStream.connection.flush()
            requests.drain()
            var seen = 0
            for await _ in requests { seen += 1 }
            // 20 of a budget of 64: the first request brought them all, and still stands.
            #expect(seen == 1, "pull requests sent")
            let info = try await jetStream.connection.request("$JS.API.CONSUMER.INFO.\(name).standing")
            let object = try JSONSerialization.jsonObject(with: info.payload) as? [String: Any]
            #expect(object?["num_waiting"] as? Int == 1)
        }
    }

    /// Messages a standing request brought but nobody fetched go back when the consumer stops:
    /// another instance gets them at once, not after the ack wait (30 s).
    @Test func messagesReceivedButNotFetchedGoBackOnStop() async throws {
        try await withStream { jetStream, name, prefix in
            let subject = "\(prefix).handover"
            // Stopped and let go of, as a service that shuts down does.
            do {
                let first = try await jetStream.pullConsumer(stream: name, durable: "handover", filterSubject: subject)
                #expect(try await first.fetch(batch: 1, timeout: .milliseconds(200)).isEmpty)
                for index in 0..<3 { _ = try await jetStream.publish(subject, payload: Data("h\(index)".utf8)) }
                let one = try await first.fetch(batch: 1, timeout: .seconds(5))
                #expect(one.map { String(decoding: $0.message.payload, as: UTF8.self) } == ["h0"])
                try one.forEach { try $0.ack() }
                // Both received: one still on its way when the inbox closes waits out the ack wait.
                #expect(try await TestServers.waitUntil { first.unfetched == 2 })
                first.stop()
            }
            let second = try await jetStream.pullConsumer(stream: name, durable: "handover", filterSubject: subject)
            let started = ContinuousClock.now
            let rest = try await second.fetch(atLeast: 2, within: .seconds(20))
            // Redelivered in whatever order the server takes them back.
            #expect(rest.map { String(decoding: $0.message.payload, as: UTF8.self) }.sorted() == ["h1", "h2"])
            // The ack wait is 30 s.
            #expect(ContinuousClock.now - started < .seconds(10))
        }
    }

    /// A consumer deleted under a standing request: the fetch fails (so that the consumer is
    /// made again) rather than coming back empty for ever.
    @Test func aFetchFailsOnceItsConsumerIsDeleted() async throws {
        try await withStream { jetStream, name, prefix in
            let consumer = try await jetStream.pullConsumer(
                stream: name,
                durable: "doomed",
                filterSubject: "\(prefix).doomed"
            )
            #expect(try await consumer.fetch(batch: 10, timeout: .milliseconds(200)).isEmpty)
            _ = try await jetStream.connection.request("$JS.API.CONSUMER.DELETE.\(name).doomed")
            let failed = try await TestServers.waitUntil {
                do {
                    _ = try await consumer.fetch(batch: 10, timeout: .milliseconds(500))
                    return false
                } catch {
                    return true
                }
            }
            #expect(failed)
        }
    }

    /// A NAK with a delay brings the message back after the delay: not at once, and not after
    /// the ack wait (30 s) as a reply the server did not understand would.
    @Test func aNakWithADelayBringsTheMessageBackAfterIt() async throws {
        try await withStream { jetStream, name, prefix in
            let subject = "\(prefix).later"
            let consumer = try await jetStream.pullConsumer(stream: name, durable: "later", filterSubject: subject)
            _ = try await jetStream.publish(subject, payload: Data("again".utf8))
            let first = try await consumer.fetch(atLeast: 1)
            try first.forEach { try $0.nak(delay: .seconds(1)) }
            let naked = ContinuousClock.now
            let again = try await consumer.fetch(atLeast: 1, within: .seconds(20))
            #expect(ContinuousClock.now - naked >= .milliseconds(900))
            #expect(ContinuousClock.now - naked < .seconds(10))
            #expect(again.map { String(decoding: $0.message.payload, as: UTF8.self) } == ["again"])
            #expect(again.first?.message.metadata?.deliveries == 2)
        }
    }

    @Test func durablePullConsumerRedeliversUntilAcknowledged() async throws {
        try await withStream { jetStream, name, prefix in
            let subject = "\(prefix).work"
            for index in 0..<3 { _ = try await jetStream.publish(subject, payload: Data("w\(index)".utf8)) }
            let consumer = try await jetStream.pullConsumer(
                stream: name,
                durable: "workers",
                filterSubject: subject,
                ackWait: .seconds(1)
            )
            #expect(
                try await jetStream.consumerBacklog(stream: name, consumer: "workers")
                    == ConsumerBacklog(pending: 3, unacknowledged: 0)
            )
            let batch = try await consumer.fetch(atLeast: 3)
            #expect(batch.map { String(decoding: $0.message.payload, as: UTF8.self) } == ["w0", "w1", "w2"])
            #expect(
                try await jetStream.consumerBacklog(stream: name, consumer: "workers")
                    == ConsumerBacklog(pending: 0, unacknowledged: 3),
                "what an operator watches: delivered, not yet handled"
            )
            // Acknowledge two; the third comes back after the ack wait.
            try batch[0].ack()
            try batch[1].ack()
            let redelivered = try await consumer.fetch(atLeast: 1, within: .seconds(5))
            #expect(redelivered.map { String(decoding: $0.message.payload, as: UTF8.self) } == ["w2"])
            #expect(redelivered.first?.message.metadata?.deliveries == 2)
            try redelivered.forEach { try $0.ack() }
            #expect(try await consumer.fetch(batch: 10, timeout: .milliseconds(1500)).isEmpty)

            // The durable consumer outlives this subscription: a new one resumes after the acks.
            consumer.stop()
            _ = try await jetStream.publish(subject, payload: Data("w3".utf8))
            let resumed = try await jetStream.pullConsumer(stream: name, durable: "workers", filterSubject: subject)
            let next = try await resumed.fetch(batch: 10, timeout: .seconds(2))
            #expect(next.map { String(decoding: $0.message.payload, as: UTF8.self) } == ["w3"])
        }
    }
}

extension PullConsumer {
    /// Fetches until at least `count` messages came (a fetch gives what has come so far), or
    /// `within` passed; whatever came.
    func fetch(atLeast count: Int, batch: Int = 10, within: Duration = .seconds(10)) async throws -> [AckableMessage] {
        var fetched: [AckableMessage] = []
        let deadline = ContinuousClock.now + within
        while fetched.count < count && ContinuousClock.now < deadline {
            let more = try await fetch(batch: batch, timeout: .milliseconds(500))
            #expect(more.count <= batch)
            fetched += more
        }
        #expect(fetched.count >= count, "fetched \(fetched.count) of \(count)")
        return fetched
    }
}
