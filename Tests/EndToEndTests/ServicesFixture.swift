import Contracts
import Foundation
import HTTPClient
import TestSupport
import Testing

/// A control plane, two realtime instances, a waitpoints service and a replicator on the test servers, started
/// once for every test of this process that needs them, with one development environment.
struct ServicesFixture: Sendable {
    static let tokenSecret = "realtime-test-secret-0123456789abcdefghij"
    static let adminToken = "control-plane-admin-token-0123456789"
    static let shared = Task { try await ServicesFixture.start() }

    let controlPlane: ServiceProcess
    /// Two instances sharing the token secret, as a deployment with replicas has.
    let realtime: [ServiceProcess]
    let waitpoints: ServiceProcess
    let replicator: ServiceProcess
    let apiKey: String
    let environmentId: String
    let http: HTTPClient

    static func start() async throws -> ServicesFixture {
        let http = HTTPClient(configuration: .init(poolSize: 32))
        let controlPlane = try ServiceProcess(.controlPlane, extraEnvironment: ["SESSIONS_ADMIN_TOKEN": adminToken])
        try controlPlane.start()
        guard try await controlPlane.waitUntilReady(http) else {
            throw FixtureError("control-plane never became ready:\n\(controlPlane.output)")
        }
        let realtime = try (0..<2).map { _ in try ServiceProcess(.realtime, extraEnvironment: realtimeEnvironment) }
        for instance in realtime {
            try instance.start()
            guard try await instance.waitUntilReady(http) else {
                throw FixtureError("realtime never became ready:\n\(instance.output)")
            }
        }
        let waitpoints = try ServiceProcess(.waitpoints, extraEnvironment: ["SESSIONS_WAITPOINT_SWEEP_MS": "100"])
        try waitpoints.start()
        guard try await waitpoints.waitUntilReady(http) else {
            throw FixtureError("waitpoints never became ready:\n\(waitpoints.output)")
        }
        let replicator = try ServiceProcess(.replicator, extraEnvironment: ["SESSIONS_REPLICATION_FLUSH_MS": "50"])
        try replicator.start()
        guard try await replicator.waitUntilReady(http) else {
            throw FixtureError("replicator never became ready:\n\(replicator.output)")
        }
        let command = try ServiceProcess(
            .controlPlane,
            arguments: ["env", "create", "--organization", TestServers.uniqueName("rt"), "--project", "p"]
        )
        try command.start()
        _ = try await TestServers.waitUntil(timeout: .seconds(30)) { !command.process.isRunning }
        guard let line = command.output.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else {
            throw FixtureError("env create printed no JSON:\n\(command.output)")
        }
        let created = try JSONDecoder().decode([String: String].self, from: Data(line.utf8))
        return ServicesFixture(
            controlPlane: controlPlane,
            realtime: realtime,
            waitpoints: waitpoints,
            replicator: replicator,
            apiKey: created["apiKey"]!,
            environmentId: created["environmentId"]!,
            http: http
        )
    }

    static var realtimeEnvironment: [String: String] {
        ["SESSIONS_REALTIME_TOKEN_SECRET": tokenSecret, "SESSIONS_SSE_PING_SECONDS": "1"]
    }

    func get(_ url: String) async throws -> HTTPResponse { try await http.execute(HTTPRequest(url: url)) }

    var auth: HTTPHeaders { ["Authorization": "Bearer \(apiKey)"] }

    /// Creates a session; returns its friendlyId and public access token.
    func createSession(externalId: String? = nil) async throws -> (id: String, token: String) {
        var body: [String: String] = ["type": "chat.agent"]
        body["externalId"] = externalId
        let response = try await http.execute(
            HTTPRequest(
                method: "POST",
                url: controlPlane.baseURL + "/api/v1/sessions",
                headers: ["Authorization": "Bearer \(apiKey)", "Content-Type": "application/json"],
                body: try JSONEncoder().encode(body)
            )
        )
        guard response.status == 201 || response.status == 200 else {
            throw FixtureError("create answered \(response.status): \(String(decoding: response.body, as: UTF8.self))")
        }
        let created = try JSONDecoder().decode(CreatedBody.self, from: response.body)
        return (created.id, created.publicAccessToken)
    }

    /// `POST /api/v1/sessions/{session}/close` with an empty body.
    func close(_ session: String) async throws -> HTTPResponse {
        try await http.execute(
            HTTPRequest(
                method: "POST",
                url: controlPlane.baseURL + "/api/v1/sessions/\(session)/close",
                headers: ["Authorization": "Bearer \(apiKey)", "Content-Type": "application/json"],
                body: Data("{}".utf8)
            )
        )
    }

    func channelURL(_ session: String, _ io: String = "out", instance: Int = 0) -> String {
        realtime[instance].baseURL + "/realtime/v1/sessions/\(session)/\(io)"
    }

    /// `POST …/append`.
    func append(
        _ session: String,
        _ body: String,
        io: String = "out",
        partId: String? = nil,
        instance: Int = 0,
        token: String? = nil
    ) async throws -> HTTPResponse {
        var headers: HTTPHeaders = ["Authorization": "Bearer \(token ?? apiKey)", "Content-Type": "text/plain"]
        if let partId { headers.add("X-Part-Id", partId) }
        return try await http.execute(
            HTTPRequest(
                method: "POST",
                url: channelURL(session, io, instance: instance) + "/append",
                headers: headers,
                body: Data(body.utf8)
            )
        )
    }

    /// Appends and returns the sequence number, failing on anything but 200.
    func appended(
        _ session: String,
        _ body: String,
        io: String = "out",
        partId: String? = nil,
        instance: Int = 0
    )
        async throws -> UInt64
    {
        let response = try await append(session, body, io: io, partId: partId, instance: instance)
        guard response.status == 200 else {
            throw FixtureError("append answered \(response.status): \(String(decoding: response.body, as: UTF8.self))")
        }
        return try JSONDecoder().decode(AppendBody.self, from: response.body).seqNum
    }

    /// Reads a channel over SSE until the stream ends (after `Timeout-Seconds` idle) or
    /// `until` holds for the records so far.
    func subscribe(
        _ session: String,
        io: String = "out",
        lastEventID: String? = nil,
        timeoutSeconds: Int = 1,
        instance: Int = 0,
        token: String? = nil,
        until: @Sendable ([SSERecord]) -> Bool = { _ in false }
    ) async throws -> (status: Int, events: [ServerSentEvent]) {
        var headers: HTTPHeaders = [
            "Authorization": "Bearer \(token ?? apiKey)", "Timeout-Seconds": String(timeoutSeconds),
        ]
        if let lastEventID { headers.add("Last-Event-ID", lastEventID) }
        let response = try await http.stream(
            HTTPRequest(url: channelURL(session, io, instance: instance), headers: headers)
        )
        var parser = ServerSentEventParser()
        var events: [ServerSentEvent] = []
        for try await chunk in response.body {
            events += parser.feed(chunk)
            if until(events.flatMap(\.records)) { break }
        }
        return (response.status, events)
    }

    struct CreatedBody: Decodable {
        var id: String
        var publicAccessToken: String
    }

    struct AppendBody: Decodable {
        var ok: Bool
        var seqNum: UInt64
    }
}

struct FixtureError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One record of an SSE batch, with its envelope decoded.
struct SSERecord: Decodable, Equatable, Sendable {
    var seqNum: UInt64
    var timestamp: Int64
    var body: String

    enum CodingKeys: String, CodingKey {
        case seqNum = "seq_num"
        case timestamp, body
    }

    struct Envelope: Decodable, Equatable {
        var data: String
        var id: String
    }

    var envelope: Envelope? { try? JSONDecoder().decode(Envelope.self, from: Data(body.utf8)) }
}

extension ServerSentEvent {
    var records: [SSERecord] {
        guard event == "batch" else { return [] }
        struct Batch: Decodable { var records: [SSERecord] }
        return (try? JSONDecoder().decode(Batch.self, from: Data(data.utf8)))?.records ?? []
    }
}
