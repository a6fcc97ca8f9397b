import Contracts
import Foundation
import HTTPTypes
import Logging
import Nats
import ServiceKit
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
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await service.run() }
                _ = try await TestServers.waitUntil {
                    (try? await connection.request("$SRV.PING.\(service.name)", timeout: .milliseconds(200))) != nil
                }
                try await body(api, tenants, connection)
                group.cancelAll()
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

    @Test func lifecycleEventsAreDurableOnJetStream() async throws {
        try await withControlPlane { api, tenants, _, connection in
            let jetStream = try JetStream(connection: connection)
            let created = try await api.create(#"{"type":"t"}"#, token: tenants.a.apiKey)
            _ = try await api.call(
                .patch,
                "/api/v1/sessions/\(created.session.id)",
                token: tenants.a.apiKey,
                json: #"{"tags":["z"]}"#
            )
            _ = try await api.call(
                .post,
                "/api/v1/sessions/\(created.session.id)/close",
                token: tenants.a.apiKey,
                json: "{}"
            )
            _ = try await api.call(
                .post,
                "/api/v1/sessions/\(created.session.id)/close",
                token: tenants.a.apiKey,
                json: "{}"
            )
            let events = try jetStream.orderedConsumer(
                stream: Subjects.sessionEventsStream,
                subject: "events.sessions.\(tenants.a.environmentId).>"
            )
            var received: [SessionEvent] = []
            for await message in events {
                received.append(try JSONDecoder.sessions.decode(SessionEvent.self, from: message.payload))
                if message.metadata?.pending == 0 { break }
            }
            events.unsubscribe()
            let mine = received.filter { $0.session.friendlyId == created.session.id }
            #expect(mine.map(\.kind) == [.created, .updated, .closed], "one closed event however often it is closed")
            #expect(mine.last?.session.closedAt != nil)
            #expect(mine[1].session.tags == ["z"])
        }
    }
}
