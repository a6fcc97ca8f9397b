import Contracts
import Foundation
import HTTPTypes
import Logging
import Nats
import Postgres
import ServiceKit
import ServiceLifecycleTestKit
import Synchronization
import TestSupport
import Testing

@testable import ControlPlane

@Suite(.timeLimit(.minutes(2))) struct NatsEndpointTests {
    /// Serves the control plane's NATS endpoints under a unique service name while `body` runs.
    func withEndpoints(_ body: @escaping @Sendable (API, Tenants, NatsConnection) async throws -> Void) async throws {
        try await withControlPlane { api, tenants, controlPlane, connection in
            let service = NatsService(
                connection: connection,
                name: TestServers.uniqueName("cp"),
                version: "0.1.0",
                description: "test",
                endpoints: controlPlane.endpoints,
                logger: Logger(label: "test")
            )
            // Other tests serve the same subjects in the same queue group, so this service must
            // stop the way a real one does — draining, answering what it took — never cancelled.
            try await testGracefulShutdown { trigger in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await service.run() }
                    _ = try await TestServers.waitUntil {
                        (try? await connection.request("$SRV.PING.\(service.name)", timeout: .milliseconds(200))) != nil
                    }
                    try await body(api, tenants, connection)
                    trigger.triggerGracefulShutdown()
                    try await group.waitForAll()
                }
            }
        }
    }

    @Test func resolveFindsASessionByEitherIdWithinItsEnvironment() async throws {
        try await withEndpoints { api, tenants, connection in
            let externalId = TestServers.uniqueName("resolve")
            let created = try await api.create(#"{"type":"t","externalId":"\#(externalId)"}"#, token: tenants.a.apiKey)
            for key in [created.session.id, externalId] {
                let reply = try await connection.serviceRequest(
                    Subjects.resolveSession,
                    payload: try JSONEncoder.sessions.encode(
                        ResolveSessionRequest(environmentId: tenants.a.environmentId, session: key)
                    )
                )
                let record = try #require(
                    try? JSONDecoder.sessions.decode(SessionRecord.self, from: reply),
                    "\(String(decoding: reply, as: UTF8.self))"
                )
                #expect(record.friendlyId == created.session.id)
                #expect(record.environmentId == tenants.a.environmentId)
            }
            await #expect(throws: NatsServiceError(.notFound, "Session not found")) {
                try await connection.serviceRequest(
                    Subjects.resolveSession,
                    payload: try JSONEncoder.sessions.encode(
                        ResolveSessionRequest(environmentId: tenants.b.environmentId, session: externalId)
                    )
                )
            }
            await #expect(throws: NatsServiceError(.badRequest, "Invalid ResolveSessionRequest payload")) {
                try await connection.serviceRequest(Subjects.resolveSession, payload: Data("{".utf8))
            }
        }
    }

    @Test func natsAuthenticatorAuthenticatesThroughTheControlPlane() async throws {
        try await withEndpoints { api, tenants, connection in
            let authenticator = NatsAuthenticator(connection: connection)
            let secret = try await authenticator.authenticate(token: tenants.a.apiKey)
            #expect(secret.environmentId == tenants.a.environmentId)
            #expect(secret.isSecretKey)

            let created = try await api.create(#"{"type":"t"}"#, token: tenants.b.apiKey)
            let jwt = try await authenticator.authenticate(token: created.publicAccessToken)
            #expect(jwt.environmentId == tenants.b.environmentId)
            #expect(jwt.scopes?.contains("read:sessions:\(created.session.id)") == true)
            #expect(jwt.expiresAt != nil)
            // A token that expires absurdly late (year 3e12) is valid; its expiry must still
            // travel to the other services (it could not be decoded there: 503 for a good token).
            var claims = Forge.claims(environmentId: tenants.b.environmentId, scopes: ["read:all"])
            claims["exp"] = 1e20
            let farOff = try await authenticator.authenticate(token: try Forge.hs256(claims, key: tenants.b.apiKey))
            #expect(
                farOff.environmentId == tenants.b.environmentId && farOff.expiresAt == Date.supportedRange.upperBound
            )

            await #expect(throws: APIError(.unauthorized, "Invalid API Key")) {
                try await authenticator.authenticate(token: "tr_dev_nope")
            }
        }
    }

    /// Serves `auth.authenticate` with `answer` on a NATS server of its own while `body` runs.
    func withAuthenticationService(
        _ answer: @escaping @Sendable (AuthenticateRequest) async throws -> Principal,
        _ body: (NatsConnection) async throws -> Void
    ) async throws {
        let server = try OwnNatsServer()
        try server.start()
        let connection = try await NatsConnection.connect(.init(url: server.url, name: "auth service"))
        #expect(try await TestServers.waitUntil { connection.isConnected }, "never connected")
        let service = NatsService(
            connection: connection,
            name: "control-plane",
            version: "0",
            description: "authenticates as the test says",
            endpoints: [
                NatsEndpoint(name: "authenticate", subject: Subjects.authenticate) { message in
                    try JSONEncoder.sessions.encode(
                        try await answer(
                            try JSONDecoder.sessions.decode(AuthenticateRequest.self, from: message.payload)
                        )
                    )
                }
            ],
            logger: Logger(label: "test")
        )
        let running = Task { try await service.run() }
        let answered = try await TestServers.waitUntil {
            (try? await connection.request("$SRV.PING.control-plane", timeout: .milliseconds(200))) != nil
        }
        #expect(answered)
        try await body(connection)
        running.cancel()
        await connection.close()
        try await server.stop()
    }

    /// A control plane that cannot answer (its database restarting) makes a request 503, not 500.
    @Test func anAuthenticationServiceThatFailsMeansTryAgain() async throws {
        try await withAuthenticationService({ _ in throw NatsServiceError(.internalError, "Internal Server Error") }) {
            connection in
            await #expect(throws: APIError(.unavailable, "Authentication is unavailable; try again")) {
                try await NatsAuthenticator(connection: connection).authenticate(token: "tr_dev_anything")
            }
        }
    }

    /// Clients reconnecting at once with one token make one lookup; a token in use is looked up
    /// again before its answer expires, so no request waits for it; a key revoked meanwhile is
    /// refused once the control plane says so.
    @Test func lookupsAreSharedAndRenewedAheadOfExpiry() async throws {
        let lookups = Mutex(0)
        let revoked = Mutex(false)
        let principal = Principal(
            environmentId: "env",
            organizationId: "org",
            projectId: "project",
            environmentType: .development,
            scopes: nil
        )
        try await withAuthenticationService({ _ in
            lookups.withLock { $0 += 1 }
            // Slow enough that the concurrent first requests below all find it under way.
            try await Task.sleep(for: .milliseconds(100))
            if revoked.withLock({ $0 }) { throw NatsServiceError(.unauthorized, "Invalid API Key") }
            return principal
        }) { connection in
            let start = Date()
            let clock = Mutex(start)
            let authenticator = NatsAuthenticator(connection: connection, cacheLifetime: .seconds(4)) {
                clock.withLock { $0 }
            }
            func at(_ seconds: TimeInterval) { clock.withLock { $0 = start.addingTimeInterval(seconds) } }
            let answers = try await withThrowingTaskGroup(of: Principal.self) { group in
                for _ in 0..<50 { group.addTask { try await authenticator.authenticate(token: "tr_dev_shared") } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.count == 50 && answers.allSatisfy { $0 == principal })
            #expect(lookups.withLock { $0 } == 1)

            // Past half the lifetime: answered from the cache, renewed behind the answer.
            at(2.5)
            #expect(try await authenticator.authenticate(token: "tr_dev_shared") == principal)
            #expect(try await TestServers.waitUntil { lookups.withLock { $0 } == 2 })
            // Past the first answer's expiry: the renewed one answers, without a lookup (a lookup
            // would reach the service within the grace below).
            at(4.2)
            #expect(try await authenticator.authenticate(token: "tr_dev_shared") == principal)
            try await Task.sleep(for: .milliseconds(300))
            #expect(lookups.withLock { $0 } == 2)

            // Revoked: the next renewal forgets the token, and then it is refused.
            revoked.withLock { $0 = true }
            at(4.7)
            #expect(try await authenticator.authenticate(token: "tr_dev_shared") == principal)
            #expect(try await TestServers.waitUntil { lookups.withLock { $0 } == 3 })
            let refused = try await TestServers.waitUntil {
                do {
                    _ = try await authenticator.authenticate(token: "tr_dev_shared")
                    return false
                } catch let error as APIError {
                    return error == APIError(.unauthorized, "Invalid API Key")
                }
            }
            #expect(refused)
        }
    }

    @Test func lifecycleEventsAreRelayedInOrderOncePerWrite() async throws {
        try await withControlPlane { api, tenants, controlPlane, connection in
            let jetStream = try JetStream(connection: connection)
            let created = try await api.create(#"{"type":"t"}"#, token: tenants.a.apiKey)
            let id = created.session.id
            _ = try await api.call(.patch, "/api/v1/sessions/\(id)", token: tenants.a.apiKey, json: #"{"tags":["z"]}"#)
            _ = try await api.call(.post, "/api/v1/sessions/\(id)/close", token: tenants.a.apiKey, json: "{}")
            _ = try await api.call(.post, "/api/v1/sessions/\(id)/close", token: tenants.a.apiKey, json: "{}")
            // Another relay (a parallel test's) may hold the outbox for a moment: wait for the events.
            var mine: [SessionEvent] = []
            _ = try await TestServers.waitUntil {
                try await controlPlane.routes.events.relayBatch()
                mine = try await sessionEvents(of: id, environment: tenants.a.environmentId, in: jetStream)
                return mine.count >= 3
            }
            #expect(mine.map(\.kind) == [.created, .updated, .closed], "one closed event however often it is closed")
            #expect(mine.last?.session.closedAt != nil)
            #expect(mine.first?.session.closedAt == nil, "each event carries the row as written")
            #expect(mine[1].session.tags == ["z"])
        }
    }

    /// A database of its own, migrated, with one environment: other tests' relays (and the
    /// end-to-end binaries') must not drain this outbox behind the test's back.
    func withOwnOutbox(
        _ body: (PostgresClient, Principal, Logger) async throws -> Void
    ) async throws {
        let baseURL = try TestServers.databaseURL
        let name = TestServers.uniqueName("outbox")
        let admin = PostgresClient(configuration: .init(url: baseURL, poolSize: 1))
        try await admin.query("CREATE DATABASE \(identifier: name)")
        let server = baseURL.split(separator: "/", omittingEmptySubsequences: false).dropLast()
        let database = PostgresClient(
            configuration: .init(url: server.joined(separator: "/") + "/" + name, poolSize: 2)
        )
        let logger = Logger(label: "test")
        try await ControlPlaneSchema.migrator.run(on: database, logger: logger)
        let created = try await Tenancy(database: database)
            .createEnvironment(organization: "o", project: "p", type: .development, slug: "development")
        let principal = try #require(
            try await EnvironmentStore(database: database).environment(id: created.environmentId)
        )
        .principal()
        try await body(database, principal, logger)
        await database.close()
        try await admin.query("DROP DATABASE \(identifier: name) WITH (FORCE)")
        await admin.close()
    }

    func outboxCount(_ database: PostgresClient) async throws -> Int {
        try await database.query("SELECT count(*) AS n FROM session_events_outbox")[0].decode("n")
    }

    @Test func eventsWaitInTheOutboxWhileJetStreamIsUnreachable() async throws {
        try await withOwnOutbox { database, principal, logger in
            let (session, _) = try #require(
                try await SessionStore(database: database).create(NewSession(type: "t", tags: []), in: principal)
            )

            // A relay whose NATS is down fails, and leaves the event where it is.
            let nowhere = try await NatsConnection.connect(
                .init(
                    url: "nats://127.0.0.1:\(try TestServers.freePort())",
                    name: "down",
                    requestTimeout: .milliseconds(200)
                )
            )
            let stranded = SessionEventRelay(
                database: database,
                jetStream: try JetStream(connection: nowhere, timeout: .milliseconds(200)),
                logger: logger
            )
            await #expect(throws: (any Error).self) { try await stranded.relayBatch() }
            await nowhere.close()
            #expect(try await outboxCount(database) == 1)

            // A relay that reaches JetStream publishes it and empties the outbox.
            try await withRelay(of: database, logger) { relay, jetStream async throws in
                #expect(try await relay.relayBatch() == 1)
                #expect(try await outboxCount(database) == 0)
                #expect(try await publishedKinds(of: session, principal, in: jetStream) == [.created])
            }
        }
    }

    /// A relay of `database`'s outbox to the test NATS server, and that server's JetStream.
    func withRelay(
        of database: PostgresClient,
        _ logger: Logger,
        _ body: (SessionEventRelay, JetStream) async throws -> Void
    ) async throws {
        let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "relay"))
        let jetStream = try JetStream(connection: connection)
        let relay = SessionEventRelay(database: database, jetStream: jetStream, logger: logger)
        try await relay.prepare()
        try await body(relay, jetStream)
        await connection.close()
    }

    func publishedKinds(
        of session: SessionRecord,
        _ principal: Principal,
        in jetStream: JetStream
    ) async throws -> [SessionEvent.Kind] {
        try await sessionEvents(of: session.friendlyId, environment: principal.environmentId, in: jetStream).map(\.kind)
    }

    /// A relay that died after publishing and before deleting leaves its rows: the next one's
    /// batch holds message ids JetStream has, is refused whole, and goes out one by one, the
    /// published events dropped as duplicates and the rest stored. A pass publishes one batch.
    @Test func eventsPublishedBeforeACrashAreNotPublishedTwice() async throws {
        try await withOwnOutbox { database, principal, logger in
            let store = SessionStore(database: database)
            var sessions: [SessionRecord] = []
            for _ in 0..<3 {
                sessions.append(try #require(try await store.create(NewSession(type: "t", tags: []), in: principal)).0)
            }
            try await database.query("CREATE TABLE relayed AS SELECT * FROM session_events_outbox")
            try await withRelay(of: database, logger) { relay, jetStream async throws in
                #expect(try await relay.relayBatch() == 3)
                let batches = try await eventMessages(environment: principal.environmentId, in: jetStream)
                    .map { $0.headers["Nats-Batch-Id"] }
                #expect(batches.count == 3 && batches[0] != nil && Set(batches).count == 1, "one batch: \(batches)")

                // The crash: the published rows are back, beside one never published.
                try await database.query("INSERT INTO session_events_outbox SELECT * FROM relayed")
                sessions.append(try #require(try await store.create(NewSession(type: "t", tags: []), in: principal)).0)
                #expect(try await relay.relayBatch() == 4)
                #expect(try await outboxCount(database) == 0)
                for session in sessions {
                    #expect(try await publishedKinds(of: session, principal, in: jetStream) == [.created])
                }
            }
        }
    }

    @Test func aRowThatIsNoEventIsSetAsideAndTheRestGoOut() async throws {
        try await withOwnOutbox { database, principal, logger in
            let store = SessionStore(database: database)
            let (first, _) = try #require(try await store.create(NewSession(type: "t", tags: []), in: principal))
            // A row no relay can turn into an event, between two good ones.
            let broken = try await database.query(
                """
                INSERT INTO session_events_outbox (kind, session_row)
                VALUES ('updated', '{"id": "broken", "friendly_id": "session_broken"}') RETURNING id
                """
            )[0].decode("id", as: Int64.self)
            let (second, _) = try #require(try await store.create(NewSession(type: "t", tags: []), in: principal))

            try await withRelay(of: database, logger) { relay, jetStream async throws in
                #expect(try await relay.relayBatch() == 3)
                #expect(try await outboxCount(database) == 0)
                let failed = try await database.query("SELECT id, error FROM session_events_failed")
                #expect(try failed.map { try $0.decode("id", as: Int64.self) } == [broken])
                #expect(try failed.first?.decode("error", as: String.self).isEmpty == false, "with the reason")
                for session in [first, second] {
                    #expect(try await publishedKinds(of: session, principal, in: jetStream) == [.created])
                }
            }
        }
    }
}
