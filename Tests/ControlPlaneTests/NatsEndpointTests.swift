import Contracts
import Foundation
import HTTPTypes
import Logging
import Nats
import Postgres
import ServiceKit
import ServiceLifecycleTestKit
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

            await #expect(throws: APIError(.unauthorized, "Invalid API Key")) {
                try await authenticator.authenticate(token: "tr_dev_nope")
            }
        }
    }

    /// A control plane that cannot answer (its database restarting) makes a request 503, not 500.
    @Test func anAuthenticationServiceThatFailsMeansTryAgain() async throws {
        let server = try OwnNatsServer()
        try server.start()
        let connection = try await NatsConnection.connect(.init(url: server.url, name: "failing auth"))
        #expect(try await TestServers.waitUntil { connection.isConnected }, "never connected")
        let failing = NatsService(
            connection: connection,
            name: "control-plane",
            version: "0",
            description: "answers every authentication with an internal error",
            endpoints: [
                NatsEndpoint(name: "authenticate", subject: Subjects.authenticate) { _ in
                    throw NatsServiceError(.internalError, "Internal Server Error")
                }
            ],
            logger: Logger(label: "test")
        )
        let running = Task { try await failing.run() }
        let answered = try await TestServers.waitUntil {
            (try? await connection.request("$SRV.PING.control-plane", timeout: .milliseconds(200))) != nil
        }
        #expect(answered)
        await #expect(throws: APIError(.unavailable, "Authentication is unavailable; try again")) {
            try await NatsAuthenticator(connection: connection).authenticate(token: "tr_dev_anything")
        }
        running.cancel()
        await connection.close()
        try await server.stop()
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
                mine = try await events(of: id, environment: tenants.a.environmentId, in: jetStream)
                return mine.count >= 3
            }
            #expect(mine.map(\.kind) == [.created, .updated, .closed], "one closed event however often it is closed")
            #expect(mine.last?.session.closedAt != nil)
            #expect(mine.first?.session.closedAt == nil, "each event carries the row as written")
            #expect(mine[1].session.tags == ["z"])
        }
    }

    @Test func eventsWaitInTheOutboxWhileJetStreamIsUnreachable() async throws {
        // A database of its own: other tests' relays (and the end-to-end binaries') must not
        // drain this outbox behind the test's back.
        let baseURL = try TestServers.databaseURL
        let name = TestServers.uniqueName("outbox")
        let admin = PostgresClient(configuration: .init(url: baseURL, poolSize: 1))
        try await admin.query("CREATE DATABASE \(identifier: name)")
        let server = baseURL.split(separator: "/", omittingEmptySubsequences: false).dropLast()
        let url = server.joined(separator: "/") + "/" + name
        let database = PostgresClient(configuration: .init(url: url, poolSize: 2))
        let logger = Logger(label: "test")
        try await ControlPlaneSchema.migrator.run(on: database, logger: logger)
        let environment = try await Tenancy(database: database)
            .createEnvironment(organization: "o", project: "p", type: .development, slug: "development")
        let principal = Principal(
            environmentId: environment.environmentId,
            organizationId: environment.organizationId,
            projectId: environment.projectId,
            environmentType: .development,
            scopes: nil
        )
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
        let waiting = try await database.query("SELECT count(*) AS n FROM session_events_outbox")
        #expect(try waiting[0].decode("n", as: Int.self) == 1)

        // A relay that reaches JetStream publishes it and empties the outbox.
        let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "relay"))
        let jetStream = try JetStream(connection: connection)
        let relay = SessionEventRelay(database: database, jetStream: jetStream, logger: logger)
        try await relay.prepare()
        #expect(try await relay.relayBatch() == 1)
        let left = try await database.query("SELECT count(*) AS n FROM session_events_outbox")
        #expect(try left[0].decode("n", as: Int.self) == 0)
        let published = try await events(of: session.friendlyId, environment: environment.environmentId, in: jetStream)
        #expect(published.map(\.kind) == [.created])

        await connection.close()
        await database.close()
        try await admin.query("DROP DATABASE \(identifier: name) WITH (FORCE)")
        await admin.close()
    }

    /// Every event of one session in the stream so far (none when nothing arrives within 5 s).
    func events(of session: String, environment: String, in jetStream: JetStream) async throws -> [SessionEvent] {
        let consumer = try jetStream.orderedConsumer(
            stream: Subjects.sessionEventsStream,
            subject: "events.sessions.\(environment).>"
        )
        defer { consumer.unsubscribe() }
        let received = try? await withTimeout(.seconds(5)) {
            var received: [SessionEvent] = []
            for await message in consumer {
                received.append(try JSONDecoder.sessions.decode(SessionEvent.self, from: message.payload))
                if message.metadata?.pending == 0 { break }
            }
            return received
        }
        return (received ?? []).filter { $0.session.friendlyId == session }
    }
}
