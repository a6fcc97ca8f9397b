import ClickHouse
import Contracts
import Foundation
import HTTPClient
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import JWTKit
import Logging
import Nats
import Postgres
import ServiceKit
import TestSupport
import Testing

@testable import ControlPlane

@Suite(.timeLimit(.minutes(2))) struct AuthorizationTests {
    func token(
        _ tenants: Tenants,
        _ scopes: [String],
        key: String? = nil,
        environment: String? = nil
    ) async throws -> String {
        try await AccessTokens.mint(
            environmentId: environment ?? tenants.a.environmentId,
            secretKey: key ?? tenants.a.apiKey,
            scopes: scopes,
            settings: AccessTokenSettings()
        )
    }

    @Test func missingOrInvalidCredentialsAre401() async throws {
        try await withControlPlane { api, tenants, _, _ in
            for token: String? in [nil, "tr_dev_wrong", "pk_dev_public", "", "not a token at all"] {
                let response = try await api.call(.get, "/api/v1/sessions/session_x", token: token)
                #expect(response.status == 401, "\(token ?? "nil") → \(response.status)")
                #expect(response.error?.isEmpty == false)
            }
            let nearMiss = String(tenants.a.apiKey.dropLast()) + (tenants.a.apiKey.hasSuffix("X") ? "Y" : "X")
            #expect(try await api.call(.get, "/api/v1/sessions/session_x", token: nearMiss).status == 401)
        }
    }

    @Test func theBearerSchemeIsCaseInsensitiveAndTheTokenTrimmed() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let created = try await api.create(#"{"type":"t"}"#, token: tenants.a.apiKey)
            for value in [
                "bearer \(tenants.a.apiKey)", "BEARER \(tenants.a.apiKey)", "Bearer \t \(tenants.a.apiKey) \t ",
            ] {
                let response = try await api.call(
                    .get,
                    "/api/v1/sessions/\(created.session.id)",
                    headers: [.authorization: value]
                )
                #expect(response.status == 200, "\(value)")
            }
            for blank in ["Bearer ", "Bearer \t  "] {
                let response = try await api.call(.get, "/api/v1/sessions/x", headers: [.authorization: blank])
                #expect(response.status == 401, "\(blank)")
            }
            let basic = try await api.call(
                .get,
                "/api/v1/sessions/x",
                headers: [.authorization: "Basic \(tenants.a.apiKey)"]
            )
            #expect(basic.status == 401)
        }
    }

    @Test func badTokensAre401() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let scopes = ["read:all"]
            let claims = Forge.claims(environmentId: tenants.a.environmentId, scopes: scopes)
            let forged: [(String, String)] = [
                ("alg none", try Forge.unsigned(claims)),
                ("HS384", try Forge.hs384(claims, key: tenants.a.apiKey)),
                (
                    "expired",
                    try await AccessTokens.mint(
                        environmentId: tenants.a.environmentId,
                        secretKey: tenants.a.apiKey,
                        scopes: scopes,
                        lifetime: .seconds(60),
                        settings: AccessTokenSettings(),
                        now: Date().addingTimeInterval(-3600)
                    )
                ),
                (
                    "wrong issuer",
                    try await AccessTokens.mint(
                        environmentId: tenants.a.environmentId,
                        secretKey: tenants.a.apiKey,
                        scopes: scopes,
                        settings: AccessTokenSettings(issuer: "https://evil.example")
                    )
                ),
                (
                    "wrong audience",
                    try await AccessTokens.mint(
                        environmentId: tenants.a.environmentId,
                        secretKey: tenants.a.apiKey,
                        scopes: scopes,
                        settings: AccessTokenSettings(audience: "https://elsewhere.example")
                    )
                ),
                ("signed with environment B's key", try await token(tenants, scopes, key: tenants.b.apiKey)),
                (
                    "not valid before an hour from now",
                    try Forge.hs256(
                        claims.merging(["nbf": Int(Date().timeIntervalSince1970 + 3600)]) { $1 },
                        key: tenants.a.apiKey
                    )
                ),
                ("unknown environment", try await token(tenants, scopes, environment: "nope")),
                (
                    "a critical header extension it does not know",
                    try Forge.hs256(claims, key: tenants.a.apiKey, header: ["crit": ["x"], "x": 1])
                ),
            ]
            for (name, token) in forged {
                let response = try await api.call(.get, "/api/v1/sessions/session_x", token: token)
                #expect(response.status == 401, "\(name) → \(response.status) \(response.body)")
            }
            let expired = try await api.call(.get, "/api/v1/sessions/session_x", token: forged[2].1)
            #expect(expired.error?.contains("expired") == true)
            let validSince = try Forge.hs256(
                claims.merging(["nbf": Int(Date().timeIntervalSince1970 - 60)]) { $1 },
                key: tenants.a.apiKey
            )
            let accepted = try await api.call(.get, "/api/v1/sessions/session_x", token: validSince)
            #expect(accepted.status == 404, "valid since a minute ago: authenticated, and no such session")
        }
    }

    @Test func sessionTokenReadsItsSessionByEitherIdButCannotAdminister() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let externalId = TestServers.uniqueName("scoped")
            let created = try await api.create(#"{"type":"t","externalId":"\#(externalId)"}"#, token: tenants.a.apiKey)
            let other = try await api.create(#"{"type":"t"}"#, token: tenants.a.apiKey)
            let token = created.publicAccessToken
            #expect(try await api.call(.get, "/api/v1/sessions/\(created.session.id)", token: token).status == 200)
            #expect(try await api.call(.get, "/api/v1/sessions/\(externalId)", token: token).status == 200)
            #expect(
                try await api.call(.patch, "/api/v1/sessions/\(created.session.id)", token: token, json: "{}").status
                    == 403
            )
            #expect(
                try await api.call(.post, "/api/v1/sessions/\(created.session.id)/close", token: token, json: "{}")
                    .status == 403
            )
            #expect(try await api.call(.get, "/api/v1/sessions/\(other.session.id)", token: token).status == 403)
            // No oracle: a session that does not exist is just as forbidden.
            let ghost = try await api.call(.get, "/api/v1/sessions/session_doesnotexist", token: token)
            #expect(ghost.status == 403)
            #expect(try await api.call(.post, "/api/v1/sessions", token: token, json: #"{"type":"t"}"#).status == 403)
        }
    }

    @Test func scopeMatrix() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let externalId = TestServers.uniqueName("matrix")
            let created = try await api.create(
                #"{"type":"t","externalId":"\#(externalId)","taskIdentifier":"agent"}"#,
                token: tenants.a.apiKey
            )
            let id = created.session.id
            let cases: [([String], HTTPRequest.Method, String, String?, Int)] = [
                (["read:sessions"], .get, "/api/v1/sessions/\(id)", nil, 200),
                (["read:sessions"], .get, "/api/v1/sessions/session_missing", nil, 404),
                (["read:all"], .get, "/api/v1/sessions/\(id)", nil, 200),
                (["admin"], .get, "/api/v1/sessions/\(id)", nil, 200),
                (["write:sessions"], .get, "/api/v1/sessions/\(id)", nil, 403),
                (["read:sessions:\(externalId)"], .get, "/api/v1/sessions/\(id)", nil, 200),
                (["read:sessions:"], .get, "/api/v1/sessions/\(id)", nil, 403),
                (["admin:sessions:\(id)"], .patch, "/api/v1/sessions/\(externalId)", "{}", 200),
                (["admin:sessions"], .patch, "/api/v1/sessions/\(id)", "{}", 200),
                (["admin:all"], .patch, "/api/v1/sessions/\(id)", "{}", 200),
                (["write:sessions:\(id)"], .patch, "/api/v1/sessions/\(id)", "{}", 403),
                (["write:tasks:agent"], .post, "/api/v1/sessions", #"{"type":"t","taskIdentifier":"agent"}"#, 201),
                (["write:tasks:other"], .post, "/api/v1/sessions", #"{"type":"t","taskIdentifier":"agent"}"#, 403),
                (["write:tasks"], .post, "/api/v1/sessions", #"{"type":"t","taskIdentifier":"agent"}"#, 201),
                (["write:sessions"], .post, "/api/v1/sessions", #"{"type":"t"}"#, 201),
                (["admin"], .post, "/api/v1/sessions", #"{"type":"t"}"#, 201),
                (["read:all"], .post, "/api/v1/sessions", #"{"type":"t"}"#, 403),
                ([], .get, "/api/v1/sessions/\(id)", nil, 403),
                (["admin:sessions:\(externalId)"], .post, "/api/v1/sessions/\(id)/close", "{}", 200),
            ]
            for (scopes, method, path, body, expected) in cases {
                let response = try await api.call(method, path, token: try await token(tenants, scopes), json: body)
                #expect(
                    response.status == expected,
                    "\(scopes) \(method) \(path) → \(response.status) \(response.body)"
                )
            }
        }
    }

    @Test func aTaskTokenGetsAnExistingSessionOnlyOfItsOwnTasks() async throws {
        try await withControlPlane { api, tenants, controlPlane, _ in
            let externalId = TestServers.uniqueName("task-owned")
            let existing = try await api.create(
                #"{"type":"t","externalId":"\#(externalId)","taskIdentifier":"task-b","triggerConfig":{"v":1}}"#,
                token: tenants.a.apiKey
            )
            let takeover =
                #"{"type":"t","externalId":"\#(externalId)","taskIdentifier":"task-a","triggerConfig":{"v":2}}"#
            let refused = try await api.call(
                .post,
                "/api/v1/sessions",
                token: try await token(tenants, ["write:tasks:task-a"]),
                json: takeover
            )
            #expect(refused.status == 403, "\(refused.body)")
            #expect(!refused.body.contains(existing.session.id))
            let stored = try await controlPlane.store.find(externalId, environmentId: tenants.a.environmentId)
            #expect(stored?.triggerConfig == .object(["v": .number(1)]), "the refused create changed nothing")
            #expect(stored?.updatedAt == existing.session.updatedAt)
            // A token that also names the session's task gets it, as do wider grants.
            for scopes in [["write:tasks:task-a", "write:tasks:task-b"], ["write:tasks"], ["write:sessions"]] {
                let cached = try await api.call(
                    .post,
                    "/api/v1/sessions",
                    token: try await token(tenants, scopes),
                    json: takeover
                )
                #expect(cached.status == 200, "\(scopes) → \(cached.status) \(cached.body)")
                #expect(try cached.json(CreatedSession.self).session.id == existing.session.id)
            }
        }
    }

    /// "café" as one scalar and as "e" with a combining accent are equal to Swift's `==` but
    /// two externalIds (and two tasks) to PostgreSQL: a scope naming one never opens the other.
    @Test func canonicallyEquivalentIdsAreDifferentIds() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let base = TestServers.uniqueName("caf")
            let composed = base + "\u{E9}"
            let decomposed = base + "e\u{301}"
            #expect(composed == decomposed && !composed.isSameBytes(as: decomposed))
            var ids: [String: String] = [:]
            for name in [composed, decomposed] {
                let body = try JSONSerialization.data(withJSONObject: [
                    "type": "t", "externalId": name, "taskIdentifier": name,
                ])
                let created = try await api.create(String(decoding: body, as: UTF8.self), token: tenants.a.apiKey)
                #expect(created.isCached == false, "a session of its own")
                ids[name] = created.session.id
            }
            let victim = try #require(ids[decomposed])
            let path =
                "/api/v1/sessions/" + (decomposed.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")
            for scopes in [["read:sessions:\(composed)"], ["write:sessions:\(composed)"], ["read:tasks:\(composed)"]] {
                let token = try await token(tenants, scopes)
                let byName = try await api.call(.get, path, token: token)
                #expect(byName.status == 403, "\(scopes) → \(byName.status) \(byName.body)")
                #expect(try await api.call(.get, "/api/v1/sessions/\(victim)", token: token).status == 403)
            }
            // Listing by a task scope needs replication: SessionListTests.
        }
    }

    @Test func environmentsNeverSeeEachOther() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let externalId = TestServers.uniqueName("shared")
            let inA = try await api.create(#"{"type":"t","externalId":"\#(externalId)"}"#, token: tenants.a.apiKey)
            for key in [inA.session.id, externalId] {
                #expect(try await api.call(.get, "/api/v1/sessions/\(key)", token: tenants.b.apiKey).status == 404)
                #expect(
                    try await api.call(.patch, "/api/v1/sessions/\(key)", token: tenants.b.apiKey, json: "{}").status
                        == 404
                )
                #expect(
                    try await api.call(.post, "/api/v1/sessions/\(key)/close", token: tenants.b.apiKey, json: "{}")
                        .status == 404
                )
            }
            let inB = try await api.call(
                .post,
                "/api/v1/sessions",
                token: tenants.b.apiKey,
                json: #"{"type":"t","externalId":"\#(externalId)"}"#
            )
            #expect(inB.status == 201, "the same externalId is free in another environment")
            #expect(try inB.json(CreatedSession.self).session.id != inA.session.id)
            // A token of B that names A's session by id still reaches nothing of A's.
            let bToken = try await token(
                tenants,
                ["read:sessions:\(inA.session.id)"],
                key: tenants.b.apiKey,
                environment: tenants.b.environmentId
            )
            #expect(try await api.call(.get, "/api/v1/sessions/\(inA.session.id)", token: bToken).status == 404)
        }
    }
}

@Suite(.timeLimit(.minutes(2))) struct HTTPBehaviourTests {
    @Test func preflightCORSRequestIdAndMethodNotAllowed() async throws {
        try await withControlPlane { api, tenants, _, _ in
            for path in ["/api/v1/sessions", "/api/v1/sessions/abc", "/api/v1/sessions/abc/close"] {
                let preflight = try await api.call(
                    .options,
                    path,
                    headers: [.origin: "https://app.example", .accessControlRequestMethod: "POST"]
                )
                #expect(preflight.status == 200, "\(path)")
                #expect(preflight.headers[.accessControlAllowOrigin] == "*")
                #expect(preflight.headers[.accessControlAllowMethods]?.contains("OPTIONS") == true)
                #expect(preflight.headers[.accessControlMaxAge] == "300")
            }
            let response = try await api.call(.get, "/api/v1/sessions/session_x", token: tenants.a.apiKey)
            #expect(response.headers[.init("X-Request-Id")!]?.isEmpty == false)
            #expect(response.headers[.accessControlAllowOrigin] == "*")
            let echoed = try await api.call(
                .get,
                "/api/v1/sessions/session_x",
                headers: [.init("X-Request-Id")!: "abc-123"]
            )
            #expect(echoed.headers[.init("X-Request-Id")!] == "abc-123")

            let wrongMethod = try await api.call(.delete, "/api/v1/sessions/abc", token: tenants.a.apiKey)
            #expect(wrongMethod.status == 405)
            #expect(wrongMethod.headers[.allow] == "GET, HEAD, PATCH, OPTIONS")
            // HEAD wherever GET is: the GET's status and headers, without the body.
            let created = try await api.create(#"{"type":"t"}"#, token: tenants.a.apiKey)
            // (Not the list: it reads ClickHouse, which may answer a moment later than the two calls.)
            for path in ["/api/v1/sessions/\(created.session.id)", "/api/v1/sessions/session_x"] {
                let get = try await api.call(.get, path, token: tenants.a.apiKey)
                let head = try await api.call(.head, path, token: tenants.a.apiKey)
                #expect(head.status == get.status, "\(path)")
                #expect(head.body.isEmpty, "\(path)")
                #expect(head.headers[.contentLength] == get.headers[.contentLength], "\(path)")
            }
            #expect(wrongMethod.error == "Method not allowed")
            let nowhere = try await api.call(.get, "/api/v2/nothing", token: tenants.a.apiKey)
            #expect(nowhere.status == 404)
            #expect(nowhere.error == "Not found")
        }
    }

    @Test func internalFailuresAre500WithoutDetail() async throws {
        try await withControlPlane { api, tenants, controlPlane, _ in
            let created = try await api.create(#"{"type":"t"}"#, token: tenants.a.apiKey)
            // Break the database under the routes: every query now fails inside the server.
            await controlPlane.store.database.close()
            let response = try await api.call(.get, "/api/v1/sessions/\(created.session.id)", token: tenants.a.apiKey)
            #expect(response.status == 500)
            #expect(response.body == #"{"error":"Internal Server Error"}"#)
            #expect(response.headers[.init("X-Request-Id")!]?.isEmpty == false)
        }
    }

    @Test func anUnreachableDatabaseIs503WithRetryAfter() async throws {
        let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "unreachable"))
        // Port 1: nothing listens, so every query fails to connect (a retriable error).
        let database = PostgresClient(configuration: .init(url: "postgresql://postgres@127.0.0.1:1/none", poolSize: 1))
        let api = ControlPlaneAPI(
            database: database,
            clickhouse: ClickHouseClient(configuration: .init(url: try TestServers.clickhouseURL), http: HTTPClient()),
            events: SessionEventRelay(
                database: database,
                jetStream: try JetStream(connection: connection),
                logger: Logger(label: "test")
            ),
            tokenSettings: AccessTokenSettings(),
            adminToken: nil
        )
        try await serve(api, connection: connection) { client in
            let response = try await client.execute(
                uri: "/api/v1/sessions/x",
                method: .get,
                headers: [.authorization: "Bearer tr_dev_whatever"]
            )
            #expect(response.status == .serviceUnavailable)
            #expect(response.headers[.retryAfter] == "1")
            #expect(String(buffer: response.body) == #"{"error":"Service temporarily unavailable; try again"}"#)
        }
        await connection.close()
        await database.close()
    }

    @Test func openAPIDocumentMatchesTheRoutes() async throws {
        try await withControlPlane { api, _, _, _ in
            let response = try await api.call(.get, "/api/openapi.json")
            #expect(response.status == 200)
            let document = try #require(
                try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]
            )
            #expect(document["openapi"] as? String == "3.1.0")
            let paths = try #require(document["paths"] as? [String: [String: Any]])
            let methods = ["get", "put", "post", "patch", "delete", "head"]
            // The document covers every service; the control plane serves these paths.
            let documented = Set(
                paths.filter {
                    $0.key.hasPrefix("/api/v1/sessions") || $0.key.hasPrefix("/api/v1/admin/")
                        || $0.key == "/api/openapi.json"
                }
                .flatMap { path, item in item.keys.filter(methods.contains).map { "\($0.uppercased()) \(path)" } }
            )
            let routed = Set(
                try await routedOperations().filter {
                    !["/healthz", "/readyz", "/metrics"].contains($0.split(separator: " ")[1])
                }
            )
            #expect(
                documented == routed,
                "only documented: \(documented.subtracting(routed)); only routed: \(routed.subtracting(documented))"
            )
        }
    }

    /// The control plane's routes, as the router reports them.
    func routedOperations() async throws -> [String] {
        var operations: [String] = []
        try await withControlPlaneRouter { router in
            operations = router.routes.map { route in
                let path = "\(route.path)"
                return "\(route.method.rawValue) \(path.hasPrefix("/") ? path : "/" + path)"
            }
        }
        return operations
    }
}

/// Builds the control plane's router (without serving it), for route introspection.
func withControlPlaneRouter(_ body: (Router<APIRequestContext>) async throws -> Void) async throws {
    let database = PostgresClient(configuration: .init(url: try TestServers.databaseURL, poolSize: 1))
    let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "routes"))
    let events = SessionEventRelay(
        database: database,
        jetStream: try JetStream(connection: connection),
        logger: Logger(label: "test")
    )
    let router = Router(context: APIRequestContext.self)
    ControlPlaneAPI(
        database: database,
        clickhouse: ClickHouseClient(configuration: .init(url: try TestServers.clickhouseURL), http: HTTPClient()),
        events: events,
        tokenSettings: AccessTokenSettings(),
        adminToken: nil
    ).addRoutes(to: router)
    try await body(router)
    await connection.close()
    await database.close()
}
