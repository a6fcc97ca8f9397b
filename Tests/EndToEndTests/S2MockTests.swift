import Contracts
import Foundation
import HTTPClient
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Nats
import ServiceKit
import Synchronization
import TestSupport
import Testing

@testable import Realtime

/// What S2 does that realtime's own S2 subset cannot show (streams that do not exist yet, a
/// missing basin, the account API's token listing and revocation), against a mock of s2.dev,
/// which cannot be reached from here.
@Suite(.timeLimit(.minutes(1))) struct S2StoreAndTokensWithMockS2Tests {
    @Test(arguments: [nil, 86_400])
    func anAppendToAChannelWithoutAStreamMakesItWithTheConfiguredRetention(retention: Int?) async throws {
        let s2 = MockS2()
        try await s2.serve { endpoint in
            let store = s2.store(endpoint: endpoint, retentionSeconds: retention)
            let channel = ChannelAddress(environmentId: "e", friendlyId: "session_m", io: .out)
            #expect(try await store.tail(channel) == ChannelTail(nextSeqNum: 0, timestamp: 0), "no stream: empty")
            #expect(try await store.read(channel, from: 0, limit: 10).isEmpty)

            let first = try await store.append(channel, bodies: ["a"], partId: nil, matchSeqNum: nil)
            let second = try await store.append(channel, bodies: ["b"], partId: "p1", matchSeqNum: nil)
            #expect(first.start == 0 && second.start == 1)
            #expect(try await store.read(channel, from: 0, limit: 10).map(\.body) == ["a", "b"])

            let made = s2.state.withLock { $0.made }
            #expect(made.count == 1, "made once, by the first append")
            let request = try #require(
                try made.first.flatMap { try JSONSerialization.jsonObject(with: $0) as? [String: Any] }
            )
            #expect(request["stream"] as? String == "sessions/session_m/out")
            let policy = (request["config"] as? [String: Any])?["retention_policy"] as? [String: Any]
            if let retention {
                #expect(policy?["age"] as? Int == retention)
            } else {
                #expect(policy?["infinite"] as? [String: Any] != nil, "records are kept for ever, not S2's 7 days")
            }
        }
    }

    @Test func aStreamMadeMeanwhileByAnotherWriterIsUsed() async throws {
        let s2 = MockS2()
        try await s2.serve { endpoint in
            let store = s2.store(endpoint: endpoint)
            let channel = ChannelAddress(environmentId: "e", friendlyId: "session_r", io: .in)
            // Another writer makes the stream between this append's 404 and its own create.
            s2.state.withLock { $0.makeOnNextMissingAppend = "sessions/session_r/in" }
            let ack = try await store.append(channel, bodies: ["x"], partId: nil, matchSeqNum: nil)
            #expect(ack.start == 0)
            #expect(s2.state.withLock { $0.refusedMakes } == 1, "409 resource_already_exists was taken as made")
        }
    }

    @Test func aMissingBasinIsAFailureNotAnEmptyChannel() async throws {
        let s2 = MockS2()
        s2.state.withLock { $0.basinMissing = true }
        try await s2.serve { endpoint in
            let store = s2.store(endpoint: endpoint)
            let channel = ChannelAddress(environmentId: "e", friendlyId: "session_q", io: .out)
            await #expect(throws: StreamStoreError.self) { try await store.tail(channel) }
            await #expect(throws: StreamStoreError.self) { try await store.read(channel, from: 0, limit: 1) }
            await #expect(throws: StreamStoreError.self) {
                try await store.append(channel, bodies: ["a"], partId: nil, matchSeqNum: nil)
            }
            #expect(s2.state.withLock { $0.made.isEmpty }, "no stream is made in a basin that is not there")
        }
    }

    @Test func revokingASessionRevokesEveryTokenOfItsChannelsAndNoOther() async throws {
        let s2 = MockS2()
        try await s2.serve { endpoint in
            let issuer = s2.directWrites(accountEndpoint: endpoint)
            for (session, io) in [("session_a", ChannelIO.out), ("session_a", .in), ("session_ab", .out)] {
                _ = try await issuer.credentials(
                    for: .init(environmentId: "e", friendlyId: session, io: io),
                    writer: .secretKey
                )
            }
            #expect(try await issuer.revoke(session: "session_a") == 2)
            let left = s2.state.withLock { $0.tokens.keys.sorted() }
            #expect(left.count == 1 && left.allSatisfy { $0.hasPrefix("sessions.session_ab.out.") })
            #expect(s2.state.withLock { $0.listings } >= 2, "the listing was read page by page")
            #expect(try await issuer.revoke(session: "session_a") == 0)

            // Not handed out again from the cache: a new token is minted.
            let before = s2.state.withLock { $0.issued }
            _ = try await issuer.credentials(
                for: .init(environmentId: "e", friendlyId: "session_a", io: .out),
                writer: .secretKey
            )
            #expect(s2.state.withLock { $0.issued } == before + 1)
        }
    }

    @Test func closingASessionRevokesItsS2TokensThroughTheDurableEvent() async throws {
        let stack = try await ServicesFixture.shared.value
        let s2 = MockS2()
        try await s2.serve { endpoint in
            let issuer = s2.directWrites(accountEndpoint: endpoint)
            let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "revoker"))
            let jetStream = try JetStream(connection: connection)
            // Made before the close, as a running realtime has it (it starts at new events).
            let consumer = await jetStream.pullConsumerOnceStreamExists(
                stream: Subjects.sessionEventsStream,
                durable: S2TokenRevoker.durableName,
                filterSubject: Subjects.sessionEvent(environmentId: "*", kind: .closed),
                onlyNew: true,
                logger: Logger(label: "revoker")
            )
            consumer?.stop()
            let revoker = Task {
                try await S2TokenRevoker(jetStream: jetStream, directWrites: issuer, logger: Logger(label: "revoker"))
                    .run()
            }
            defer { revoker.cancel() }

            let (session, _) = try await stack.createSession()
            let open = try await stack.createSession()
            for id in [session, open.id] {
                _ = try await issuer.credentials(
                    for: .init(environmentId: stack.environmentId, friendlyId: id, io: .out),
                    writer: .secretKey
                )
            }
            let closed = try await stack.close(session)
            #expect(closed.status == 200)
            let revoked = try await TestServers.waitUntil(timeout: .seconds(10)) {
                s2.state.withLock { $0.tokens.keys.allSatisfy { !$0.hasPrefix("sessions.\(session).") } }
            }
            #expect(revoked, "the closed session's token was revoked")
            #expect(s2.state.withLock { $0.tokens.keys.contains { $0.hasPrefix("sessions.\(open.id).") } })
            revoker.cancel()
            _ = await revoker.result
            await connection.close()
        }
    }
}

/// A stand-in for s2.dev's basin data plane and account API, keeping what it is asked.
final class MockS2: Sendable {
    struct State {
        var streams: [String: [String]] = [:]
        /// The bodies of `POST /streams` that made a stream.
        var made: [Data] = []
        var refusedMakes = 0
        var makeOnNextMissingAppend: String?
        var basinMissing = false
        /// Access tokens by id.
        var tokens: [String: String] = [:]
        var issued = 0
        var listings = 0
    }

    let state = Mutex(State())

    func store(endpoint: String, retentionSeconds: Int? = nil) -> S2Store {
        S2Store(
            settings: .init(endpoint: endpoint, basin: "b", retentionSeconds: retentionSeconds),
            http: HTTPClient(),
            logger: Logger(label: "mock-s2"),
            credentials: { _ in "root" }
        )
    }

    func directWrites(accountEndpoint: String) -> S2DirectWrites {
        S2DirectWrites(
            settings: .init(
                accountEndpoint: accountEndpoint,
                endpoint: "https://b.b.s2.dev/v1",
                basin: "b",
                rootToken: "root",
                skipAccessTokens: false,
                lifetime: .seconds(3600)
            ),
            http: HTTPClient(),
            streamName: { "sessions/\($0.friendlyId)/\($0.io.rawValue)" }
        )
    }

    /// Serves the mock for the duration of `body`, which gets its `/v1` URL.
    func serve(_ body: @escaping @Sendable (String) async throws -> Void) async throws {
        let router = Router()
        router.post("v1/streams") { request, _ in try await self.make(request) }
        router.post("v1/streams/{stream}/records") { request, context in
            try await self.append(request, stream: try Self.stream(context))
        }
        router.get("v1/streams/{stream}/records") { request, context in
            self.read(stream: try Self.stream(context), base64: request.headers[.init("S2-Format")!] == "base64")
        }
        router.get("v1/streams/{stream}/records/tail") { _, context in self.tail(stream: try Self.stream(context)) }
        router.post("v1/access-tokens") { request, _ in try await self.issue(request) }
        router.get("v1/access-tokens") { request, _ in self.list(request) }
        router.delete("v1/access-tokens/{id}") { _, context in
            let id = try context.parameters.require("id")
            let removed = self.state.withLock { $0.tokens.removeValue(forKey: id) }
            return removed == nil
                ? Self.json(["code": "access_token_not_found"], .notFound) : Response(status: .noContent)
        }
        try await Application(router: router).test(.live) { client in
            try await body("http://127.0.0.1:\(client.port!)/v1")
        }
    }

    private static func stream(_ context: BasicRequestContext) throws -> String {
        let raw = try context.parameters.require("stream")
        return raw.removingPercentEncoding ?? raw
    }

    private static func json(_ value: Any, _ status: HTTPTypes.HTTPResponse.Status = .ok) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: value)) ?? Data()
        return Response(
            status: status,
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data))
        )
    }

    private func missing(_ stream: String) -> Response? {
        let code = state.withLock { state -> String? in
            if state.basinMissing { return "basin_not_found" }
            return state.streams[stream] == nil ? "stream_not_found" : nil
        }
        return code.map { Self.json(["code": $0, "message": "not found"], .notFound) }
    }

    private func make(_ request: Request) async throws -> Response {
        let body = Data(try await request.body.collect(upTo: 65536).readableBytesView)
        let parsed = try JSONSerialization.jsonObject(with: body) as? [String: Any] ?? [:]
        let name = parsed["stream"] as? String ?? ""
        let exists = state.withLock { state in
            if state.streams[name] != nil {
                state.refusedMakes += 1
                return true
            }
            state.streams[name] = []
            state.made.append(body)
            return false
        }
        return exists
            ? Self.json(["code": "resource_already_exists", "message": "exists"], .conflict)
            : Self.json(["name": name, "created_at": "2026-11-30T00:00:00Z"], .created)
    }

    private func append(_ request: Request, stream: String) async throws -> Response {
        let body = try await request.body.collect(upTo: 1 << 20)
        if let refusal = missing(stream) {
            state.withLock { state in
                if state.makeOnNextMissingAppend == stream {
                    state.streams[stream] = []
                    state.makeOnNextMissingAppend = nil
                }
            }
            return refusal
        }
        let input = try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] ?? [:]
        let bodies = (input["records"] as? [[String: Any]] ?? []).map { $0["body"] as? String ?? "" }
        let match = input["match_seq_num"] as? Int
        let outcome = state.withLock { state -> (start: Int, end: Int, matched: Bool) in
            let start = state.streams[stream]!.count
            guard match == nil || match == start else { return (start, start, false) }
            state.streams[stream]!.append(contentsOf: bodies)
            return (start, start + bodies.count, true)
        }
        guard outcome.matched else { return Self.json(["seq_num_mismatch": outcome.start], .preconditionFailed) }
        return Self.json([
            "start": ["seq_num": outcome.start, "timestamp": 1], "end": ["seq_num": outcome.end, "timestamp": 1],
            "tail": ["seq_num": outcome.end, "timestamp": 1],
        ])
    }

    /// Bodies as stored (raw), or in S2's base64 format.
    private func read(stream: String, base64: Bool) -> Response {
        if let refusal = missing(stream) { return refusal }
        let bodies = state.withLock { $0.streams[stream] ?? [] }
        let records = bodies.enumerated().map {
            let body = base64 ? Data($0.element.utf8).base64EncodedString() : $0.element
            return ["seq_num": $0.offset, "timestamp": 1, "body": body] as [String: Any]
        }
        return Self.json(["records": records])
    }

    private func tail(stream: String) -> Response {
        if let refusal = missing(stream) { return refusal }
        let count = state.withLock { $0.streams[stream]?.count ?? 0 }
        return Self.json(["tail": ["seq_num": count, "timestamp": 1]])
    }

    private func issue(_ request: Request) async throws -> Response {
        let body = try await request.body.collect(upTo: 65536)
        let parsed = try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] ?? [:]
        let id = parsed["id"] as? String ?? ""
        let token = state.withLock { state in
            state.issued += 1
            state.tokens[id] = "scoped-\(state.issued)"
            return "scoped-\(state.issued)"
        }
        return Self.json(["access_token": token], .created)
    }

    /// One token per page, so that paging is exercised.
    private func list(_ request: Request) -> Response {
        let prefix = request.uri.queryParameters["prefix"].map(String.init) ?? ""
        let after = request.uri.queryParameters["start_after"].map(String.init) ?? ""
        let matching = state.withLock { state in
            state.listings += 1
            return state.tokens.keys.filter { $0.hasPrefix(prefix) && $0 > after }.sorted()
        }
        return Self.json([
            "access_tokens": matching.prefix(1).map { ["id": $0] }, "has_more": matching.count > 1,
        ])
    }
}
