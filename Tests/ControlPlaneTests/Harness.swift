import ClickHouse
import Contracts
import Crypto
import Foundation
import HTTPClient
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Nats
import Postgres
import Prometheus
import ServiceKit
import TestSupport
import Testing

@testable import ControlPlane

/// Two environments of their own, so tests never see each other's sessions.
struct Tenants: Sendable {
    var a: CreatedEnvironment
    var b: CreatedEnvironment
}

/// One response, read whole.
struct APIResponse {
    var status: Int
    var headers: HTTPFields
    var body: String

    func json<Value: Decodable>(_ type: Value.Type) throws -> Value {
        try JSONDecoder.sessions.decode(type, from: Data(body.utf8))
    }

    var error: String? { try? json(ErrorBody.self).error }
}

/// Calls the control plane's router in-process.
struct API: Sendable {
    let client: any TestClientProtocol

    func call(
        _ method: HTTPRequest.Method,
        _ path: String,
        token: String? = nil,
        json: String? = nil,
        headers: HTTPFields = [:]
    ) async throws -> APIResponse {
        var headers = headers
        if let token { headers[.authorization] = "Bearer \(token)" }
        if json != nil { headers[.contentType] = "application/json" }
        let response = try await client.executeRequest(
            uri: path,
            method: method,
            headers: headers,
            body: json.map { ByteBuffer(string: $0) }
        )
        return APIResponse(
            status: Int(response.status.code),
            headers: response.headers,
            body: String(buffer: response.body)
        )
    }

    /// `POST /api/v1/sessions` with `json`, whatever it answers.
    func post(_ json: String, token: String) async throws -> APIResponse {
        try await call(.post, "/api/v1/sessions", token: token, json: json)
    }

    func create(_ json: String, token: String) async throws -> CreatedSession {
        let response = try await post(json, token: token)
        #expect([200, 201].contains(response.status), "create failed: \(response.status) \(response.body)")
        return try response.json(CreatedSession.self)
    }
}

/// The operator token the test control plane's admin API accepts.
let adminToken = "test-admin-token-0123456789"

/// The control plane's real routes, middleware and stores on the test PostgreSQL and NATS.
func withControlPlane(
    _ body: @escaping @Sendable (API, Tenants, ControlPlaneAPI, NatsConnection) async throws -> Void
) async throws {
    let logger = Logger(label: "control-plane-tests")
    let database = PostgresClient(configuration: .init(url: try TestServers.databaseURL, poolSize: 8))
    try await ControlPlaneSchema.migrator.run(on: database, logger: logger)
    let tenancy = Tenancy(database: database)
    let organization = TestServers.uniqueName("org")
    let tenants = Tenants(
        a: try await tenancy.createEnvironment(
            organization: organization,
            project: "a",
            type: .development,
            slug: "development"
        ),
        b: try await tenancy.createEnvironment(
            organization: organization,
            project: "b",
            type: .production,
            slug: "production"
        )
    )
    let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "control-plane-tests"))
    let events = SessionEventRelay(database: database, jetStream: try JetStream(connection: connection), logger: logger)
    _ = try await TestServers.waitUntil { connection.isConnected }
    try await events.prepare()
    let api = ControlPlaneAPI(
        database: database,
        clickhouse: ClickHouseClient(configuration: .init(url: try TestServers.clickhouseURL), http: HTTPClient()),
        events: events,
        tokenSettings: AccessTokenSettings(),
        adminToken: adminToken
    )
    try await serve(api, connection: connection) { client in
        try await body(API(client: client), tenants, api, connection)
    }
    await connection.close()
    await database.close()
}

/// Serves `api` behind the service host's middleware, in process.
func serve(
    _ api: ControlPlaneAPI,
    connection: NatsConnection,
    _ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void
) async throws {
    let logger = Logger(label: "control-plane-tests")
    let host = ServiceHost(
        name: .controlPlane,
        configuration: try CommonConfiguration(environment: Environment([:]), defaultPort: 0),
        connection: connection,
        checks: [],
        registry: PrometheusCollectorRegistry(),
        logger: logger
    )
    api.addRoutes(to: host.router)
    host.sealRoutes()
    try await Application(router: host.router, logger: logger).test(.router, body)
}

/// Signs arbitrary claims the way a misbehaving client might.
enum Forge {
    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func claims(environmentId: String, scopes: [String], expiresIn: TimeInterval = 3600) -> [String: Any] {
        let now = Date().timeIntervalSince1970
        return [
            "sub": environmentId, "pub": true, "scopes": scopes, "iat": Int(now), "exp": Int(now + expiresIn),
            "iss": "https://id.trigger.dev", "aud": "https://api.trigger.dev",
        ]
    }

    /// Signed with HMAC-SHA384 (`alg: HS384`), which the server must refuse.
    static func hs384(_ claims: [String: Any], key: String) throws -> String {
        try signed(claims, key: key, algorithm: "HS384") { HMAC<SHA384>.authenticationCode(for: $0, using: $1) }
    }

    /// Signed as the server's own tokens are (`alg: HS256`), with whatever claims, and header
    /// members besides `alg` and `typ`.
    static func hs256(_ claims: [String: Any], key: String, header: [String: Any] = [:]) throws -> String {
        try signed(claims, key: key, algorithm: "HS256", header: header) {
            HMAC<SHA256>.authenticationCode(for: $0, using: $1)
        }
    }

    private static func signed(
        _ claims: [String: Any],
        key: String,
        algorithm: String,
        header members: [String: Any] = [:],
        _ mac: (Data, SymmetricKey) -> some ContiguousBytes
    ) throws -> String {
        let fields = members.merging(["alg": algorithm, "typ": "JWT"]) { $1 }
        let header = base64URL(try JSONSerialization.data(withJSONObject: fields))
        let payload = base64URL(try JSONSerialization.data(withJSONObject: claims))
        let signature = mac(Data("\(header).\(payload)".utf8), SymmetricKey(data: Data(key.utf8)))
        return "\(header).\(payload).\(base64URL(signature.withUnsafeBytes { Data($0) }))"
    }

    /// `alg: none`, no signature.
    static func unsigned(_ claims: [String: Any]) throws -> String {
        let header = base64URL(try JSONSerialization.data(withJSONObject: ["alg": "none", "typ": "JWT"]))
        let payload = base64URL(try JSONSerialization.data(withJSONObject: claims))
        return "\(header).\(payload)."
    }
}

/// Every event of one session in the stream so far (none when nothing arrives within 5 s).
func sessionEvents(of session: String, environment: String, in jetStream: JetStream) async throws -> [SessionEvent] {
    try await eventMessages(environment: environment, in: jetStream)
        .map { try JSONDecoder.sessions.decode(SessionEvent.self, from: $0.payload) }
        .filter { $0.session.friendlyId == session }
}

/// Every message of the environment's lifecycle events stored so far, in stream order.
func eventMessages(environment: String, in jetStream: JetStream) async throws -> [NatsMessage] {
    let consumer = try jetStream.orderedConsumer(
        stream: Subjects.sessionEventsStream,
        subject: "events.sessions.\(environment).>"
    )
    defer { consumer.unsubscribe() }
    let received = try? await withTimeout(.seconds(5)) {
        var received: [NatsMessage] = []
        for await message in consumer {
            received.append(message)
            if message.metadata?.pending == 0 { break }
        }
        return received
    }
    return received ?? []
}
