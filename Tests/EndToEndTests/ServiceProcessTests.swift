import Contracts
import Foundation
import HTTPClient
import Nats
import Postgres
import ServiceKit
import TestSupport
import Testing

@testable import ControlPlane

/// A service binary started for a test, with its output captured to a file.
final class ServiceProcess: @unchecked Sendable {
    let name: ServiceName
    let port: Int
    let process = Process()
    let log: URL

    /// Where the built executables are: `SESSIONS_BIN_DIR`, or the products folder of this build.
    static var binaryDirectory: URL {
        if let directory = ProcessInfo.processInfo.environment["SESSIONS_BIN_DIR"] {
            return URL(fileURLWithPath: directory)
        }
        return Bundle.main.bundleURL
    }

    init(_ name: ServiceName, arguments: [String] = [], extraEnvironment: [String: String] = [:]) throws {
        self.name = name
        self.port = try TestServers.freePort()
        self.log = FileManager.default.temporaryDirectory.appendingPathComponent("\(name.rawValue)-\(port).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process.executableURL = Self.binaryDirectory.appendingPathComponent(name.rawValue)
        process.arguments = arguments
        var environment = try TestServers.environment
        environment["SESSIONS_HTTP_PORT"] = String(port)
        environment["SESSIONS_LOG_LEVEL"] = "debug"
        // If this test process dies, the service follows instead of lingering.
        environment["SESSIONS_PARENT_PID"] = String(getpid())
        // Each waitpoints instance reads appended records through a durable consumer of its own:
        // one that shares the fixture's would take records the fixture's waiters wait for (and a
        // broken one, started to test readiness, would hold them until they are delivered again).
        if name == .waitpoints { environment["SESSIONS_WAITPOINT_CONSUMER"] = "test_\(port)" }
        environment.merge(extraEnvironment) { $1 }
        process.environment = environment
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    func start() throws { try process.run() }

    /// Waits for `GET /readyz` to answer 200.
    func waitUntilReady(_ http: HTTPClient, timeout: Duration = .seconds(30)) async throws -> Bool {
        try await TestServers.waitUntil(timeout: timeout) {
            guard process.isRunning else { return false }
            return try await http.execute(HTTPRequest(url: baseURL + "/readyz", timeout: .seconds(2))).status == 200
        }
    }

    /// The value of one series on `GET /metrics`: `series` is its name with its labels as
    /// exported (`name` or `name{label="value"}`); nil when it is not there.
    func metric(_ series: String, _ http: HTTPClient) async throws -> Double? {
        let metrics = try await http.execute(HTTPRequest(url: baseURL + "/metrics"))
        let line = String(decoding: metrics.body, as: UTF8.self).split(separator: "\n")
            .first { $0.hasPrefix(series + " ") }
        return line.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns its exit status.
    func terminate(timeout: Duration) async throws -> Int32? {
        process.terminate()
        let exited = try await TestServers.waitUntil(timeout: timeout) { !process.isRunning }
        if !exited {
            kill(process.processIdentifier, SIGKILL)
            return nil
        }
        return process.terminationStatus
    }
}

@Suite(.serialized, .timeLimit(.minutes(2))) struct ServiceProcessTests {
    @Test(arguments: ServiceName.allCases)
    func serviceIsHealthyDiscoverableAndStopsCleanlyOnSIGTERM(name: ServiceName) async throws {
        let http = HTTPClient()
        let service = try ServiceProcess(name)
        try service.start()
        let ready = try await service.waitUntilReady(http)
        #expect(ready, "\(name.rawValue) never became ready:\n\(service.output)")
        guard ready else {
            _ = try await service.terminate(timeout: .seconds(5))
            return
        }

        let health = try await http.execute(HTTPRequest(url: service.baseURL + "/healthz"))
        #expect(health.status == 200)
        let readiness = try JSONDecoder().decode(
            ReadinessReportBody.self,
            from: try await http.execute(HTTPRequest(url: service.baseURL + "/readyz")).body
        )
        #expect(readiness.status == "ready")
        #expect(readiness.checks["nats"] == "ok")
        let metrics = try await http.execute(HTTPRequest(url: service.baseURL + "/metrics"))
        #expect(metrics.status == 200)
        #expect(metrics.headers["Content-Type"]?.hasPrefix("text/plain") == true)
        #expect(String(decoding: metrics.body, as: UTF8.self).contains("hb_requests"))
        // A service's own series are there from the start, before their first event.
        let ownSeries: [ServiceName: String] = [
            .controlPlane: "control_plane_outbox_oldest_event_age_seconds",
            .realtime: "realtime_slow_subscribers_disconnected_total",
            .replicator: #"replicator_batches_flushed_total{success="false"}"#,
            .waitpoints: #"waitpoints_appended_records_total{consulted="postgres"}"#,
        ]
        // (Present, not 0: other tests' appends may reach this waitpoints' own consumer.)
        if let series = ownSeries[name] { #expect(try await service.metric(series, http) != nil, "\(series)") }
        #expect(health.headers["X-Request-Id"]?.isEmpty == false)
        let echoed = try await http.execute(
            HTTPRequest(url: service.baseURL + "/healthz", headers: ["X-Request-Id": "req-42"])
        )
        #expect(echoed.headers["X-Request-Id"] == "req-42")

        let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "e2e"))
        let ping = try JSONDecoder().decode(
            ServiceDiscovery.Ping.self,
            from: try await connection.request("$SRV.PING.\(name.rawValue)", timeout: .seconds(2)).payload
        )
        #expect(ping.name == name.rawValue)
        #expect(ping.version == ServiceName.version)
        await connection.close()

        let start = ContinuousClock.now
        let status = try await service.terminate(timeout: .seconds(5))
        #expect(status == 0, "\(name.rawValue) did not exit 0 within 5 s of SIGTERM:\n\(service.output)")
        #expect(ContinuousClock.now - start < .seconds(5))
        await http.close()
    }

    /// Without a dependency it cannot work without, a service is not ready (503); without one
    /// it can partly work without — waitpoints without Redis complete waiters through
    /// PostgreSQL — it stays ready, `degraded`, so that a router does not take it out.
    @Test func readinessReportsADependencyThatIsDown() async throws {
        let http = HTTPClient()
        let deadPort = try TestServers.freePort()
        let service = try ServiceProcess(
            .waitpoints,
            extraEnvironment: ["SESSIONS_REDIS_URL": "redis://127.0.0.1:\(deadPort)"]
        )
        try service.start()
        let alive = try await TestServers.waitUntil {
            try await http.execute(HTTPRequest(url: service.baseURL + "/healthz", timeout: .seconds(1))).status == 200
        }
        #expect(alive, "\(service.output)")
        let readiness = try await http.execute(HTTPRequest(url: service.baseURL + "/readyz"))
        #expect(readiness.status == 200)
        let report = try JSONDecoder().decode(ReadinessReportBody.self, from: readiness.body)
        #expect(report.status == "degraded")
        #expect(report.checks["redis"] == "unavailable")
        #expect(report.checks["postgres"] == "ok")
        #expect(
            !String(decoding: readiness.body, as: UTF8.self).contains("127.0.0.1"),
            "no internal detail in the body"
        )
        #expect(try await service.terminate(timeout: .seconds(5)) == 0)
        await http.close()
    }

    /// The control plane's outbox metric shows events held back while NATS is away. A database
    /// and a NATS server of the test's own: this relay must not take other tests' events.
    @Test func theOutboxAgeGrowsWhileNatsIsAwayAndFallsOnceItIsBack() async throws {
        let nats = try OwnNatsServer(jetStream: true)
        try nats.start()
        let (databaseName, databaseURL) = try WaitpointRecoveryTests.freshDatabase()
        let service = try ServiceProcess(
            .controlPlane,
            extraEnvironment: ["SESSIONS_DATABASE_URL": databaseURL, "SESSIONS_NATS_URL": nats.url]
        )
        try service.start()
        let http = HTTPClient()
        #expect(try await service.waitUntilReady(http), "\(service.output)")
        func age() async throws -> Double? {
            try await service.metric("control_plane_outbox_oldest_event_age_seconds", http)
        }
        #expect(try await age() == 0)
        try await nats.stop()

        let database = PostgresClient(configuration: .init(url: databaseURL, poolSize: 1))
        let created = try await Tenancy(database: database)
            .createEnvironment(organization: "o", project: "p", type: .development, slug: "development")
        let principal = try #require(
            try await EnvironmentStore(database: database).environment(id: created.environmentId)
        )
        .principal()
        _ = try await SessionStore(database: database).create(NewSession(type: "t", tags: []), in: principal)
        #expect(try await TestServers.waitUntil { try await age() ?? 0 >= 1 }, "\(service.output)")

        try nats.start()
        #expect(
            try await TestServers.waitUntil(timeout: .seconds(20)) { try await age() == 0 },
            "\(service.output)"
        )
        #expect(try await service.metric("control_plane_session_events_relayed_total", http) == 1)
        #expect(try await service.terminate(timeout: .seconds(5)) == 0)
        await database.close()
        let admin = PostgresClient(configuration: .init(url: try TestServers.databaseURL, poolSize: 1))
        try await admin.query("DROP DATABASE \(identifier: databaseName) WITH (FORCE)")
        await admin.close()
        try await nats.remove()
        await http.close()
    }

    @Test func aServiceWatchingItsParentStopsCleanlyWhenTheParentIsGone() async throws {
        // A shell starts realtime as its child, telling it the shell's pid, then exits.
        let port = try TestServers.freePort()
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("orphan-\(port).log")
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/bin/sh")
        shell.arguments = [
            "-c", #"SESSIONS_PARENT_PID=$$ "$0" > "$1" 2>&1 & sleep 2"#,
            ServiceProcess.binaryDirectory.appendingPathComponent("realtime").path, log.path,
        ]
        var environment = try TestServers.environment
        environment["SESSIONS_HTTP_PORT"] = String(port)
        shell.environment = environment
        try shell.run()
        let http = HTTPClient()
        let url = "http://127.0.0.1:\(port)/readyz"
        let ready = try await TestServers.waitUntil { try await http.execute(HTTPRequest(url: url)).status == 200 }
        #expect(ready)
        // After the shell exits, realtime notices within a second and stops.
        let stopped = try await TestServers.waitUntil(timeout: .seconds(8)) {
            (try? await http.execute(HTTPRequest(url: url, timeout: .seconds(1)))) == nil
        }
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        #expect(stopped, "\(output)")
        #expect(output.contains("The parent process is gone"), "\(output)")
        await http.close()
    }

    /// A password in a URL (NATS's is logged on connecting) is hidden from the logs.
    @Test func passwordsInURLsAreHiddenForLogs() {
        #expect("nats://user:s3cret@nats:4222".passwordHidden == "nats://user:***@nats:4222")
        #expect("nats://nats:4222".passwordHidden == "nats://nats:4222")
        #expect("redis://:pw@redis:6379/0".passwordHidden == "redis://:***@redis:6379/0")
    }

    @Test func invalidConfigurationExitsWithAMessageNamingTheVariable() async throws {
        let service = try ServiceProcess(.realtime, extraEnvironment: ["SESSIONS_HTTP_PORT": "not-a-port"])
        try service.start()
        let exited = try await TestServers.waitUntil { !service.process.isRunning }
        #expect(exited)
        #expect(service.process.terminationStatus != 0)
        #expect(service.output.contains("SESSIONS_HTTP_PORT"), "\(service.output)")
    }
}

@Suite(.serialized, .timeLimit(.minutes(1))) struct EnvironmentCommandTests {
    struct Created: Decodable, Equatable {
        var organizationId: String
        var projectId: String
        var environmentId: String
        var type: String
        var apiKey: String
    }

    func create(_ arguments: [String]) async throws -> (Int32, String) {
        let command = try ServiceProcess(.controlPlane, arguments: ["env", "create"] + arguments)
        try command.start()
        _ = try await TestServers.waitUntil(timeout: .seconds(30)) { !command.process.isRunning }
        return (command.process.terminationStatus, command.output)
    }

    @Test func createsOnceAndPrintsTheSameKeyAgain() async throws {
        let organization = TestServers.uniqueName("org")
        let (status, output) = try await create([
            "--organization", organization, "--project", "p", "--type", "production",
        ])
        #expect(status == 0, "\(output)")
        let line = try #require(output.split(separator: "\n").last { $0.hasPrefix("{") })
        let first = try JSONDecoder().decode(Created.self, from: Data(line.utf8))
        #expect(first.apiKey.hasPrefix("tr_prod_") && first.apiKey.count == 40)
        #expect(first.type == "PRODUCTION")

        let (againStatus, againOutput) = try await create([
            "--organization", organization, "--project", "p", "--type", "production",
        ])
        #expect(againStatus == 0)
        let againLine = try #require(againOutput.split(separator: "\n").last { $0.hasPrefix("{") })
        #expect(try JSONDecoder().decode(Created.self, from: Data(againLine.utf8)) == first)

        let (devStatus, devOutput) = try await create(["--organization", organization, "--project", "p"])
        #expect(devStatus == 0)
        let devLine = try #require(devOutput.split(separator: "\n").last { $0.hasPrefix("{") })
        let development = try JSONDecoder().decode(Created.self, from: Data(devLine.utf8))
        #expect(development.apiKey.hasPrefix("tr_dev_"))
        #expect(development.projectId == first.projectId && development.environmentId != first.environmentId)
    }

    @Test func theServedAPIRefusesBadBodiesAndClosesStalledConnections() async throws {
        let (status, output) = try await create(["--organization", TestServers.uniqueName("org"), "--project", "p"])
        #expect(status == 0)
        let line = try #require(output.split(separator: "\n").last { $0.hasPrefix("{") })
        let environment = try JSONDecoder().decode(Created.self, from: Data(line.utf8))
        let http = HTTPClient()
        let service = try ServiceProcess(.controlPlane, extraEnvironment: ["SESSIONS_HTTP_IDLE_TIMEOUT_SECONDS": "1"])
        try service.start()
        #expect(try await service.waitUntilReady(http), "\(service.output)")
        let url = service.baseURL + "/api/v1/sessions"
        let auth = "Bearer \(environment.apiKey)"
        let chunked = try await http.execute(
            HTTPRequest(
                method: "POST",
                url: url,
                headers: ["Authorization": auth, "Content-Type": "application/json", "Transfer-Encoding": "chunked"],
                body: Data(#"{"type":"t"}"#.utf8)
            )
        )
        #expect(chunked.status == 413, "\(String(decoding: chunked.body, as: UTF8.self))")
        #expect(String(decoding: chunked.body, as: UTF8.self).contains("Content-Length is required"))
        // A body that ends before its Content-Length is the client's fault: 400, not 500.
        let short = try await Self.exchange(
            port: service.port,
            "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: \(auth)\r\n"
                + "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":"
        )
        #expect(short.response.hasPrefix("HTTP/1.1 400"), "\(short.response)")
        #expect(short.response.contains("The request body ended before its Content-Length"), "\(short.response)")
        // A client that stops inside its headers, or inside its body, is cut off after the idle timeout.
        for stalled in [
            "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nAuthor",
            "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"type\":",
        ] {
            let start = ContinuousClock.now
            let (_, closed) = try await Self.exchange(port: service.port, stalled, closeSending: false)
            #expect(closed, "the server closed the stalled connection")
            #expect(ContinuousClock.now - start < .seconds(8))
        }
        let sized = try await http.execute(
            HTTPRequest(
                method: "POST",
                url: url,
                headers: ["Authorization": auth, "Content-Type": "application/json"],
                body: Data(#"{"type":"t"}"#.utf8)
            )
        )
        #expect(sized.status == 201)
        // A body-less close as proxies send it: neither Content-Length nor Transfer-Encoding.
        let session = try JSONDecoder.sessions.decode(CreatedSession.self, from: sized.body).session.id
        let close = try await Self.exchange(
            port: service.port,
            "POST /api/v1/sessions/\(session)/close HTTP/1.1\r\nHost: x\r\nAuthorization: \(auth)\r\n\r\n"
        )
        #expect(close.response.hasPrefix("HTTP/1.1 200"), "\(close.response)")
        #expect(try await service.terminate(timeout: .seconds(5)) == 0)
        await http.close()
    }

    /// Sends `request` over a new connection, closes the sending side unless told not to, and
    /// returns what came back, and whether the server closed the connection within 10 s.
    static func exchange(
        port: Int,
        _ request: String,
        closeSending: Bool = true
    ) async throws -> (response: String, closed: Bool) {
        try await exchange(port: port, Array(request.utf8), closeSending: closeSending)
    }

    /// ``exchange(port:_:closeSending:)`` of bytes that need not be UTF-8.
    static func exchange(
        port: Int,
        _ request: [UInt8],
        closeSending: Bool = true
    ) async throws -> (response: String, closed: Bool) {
        try await Task.detached {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard descriptor >= 0 else { throw POSIXError(.EMFILE) }
            defer { close(descriptor) }
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var address = TestServers.loopbackAddress(port: port)
            let connected = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            guard connected else { throw POSIXError(.ECONNREFUSED) }
            let bytes = request
            guard send(descriptor, bytes, bytes.count, 0) == bytes.count else { throw POSIXError(.EIO) }
            if closeSending { shutdown(descriptor, Int32(SHUT_WR)) }
            var response: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            var count = 0
            repeat {
                count = recv(descriptor, &buffer, buffer.count, 0)
                if count > 0 { response += buffer[..<count] }
            } while count > 0
            return (String(decoding: response, as: UTF8.self), count == 0)
        }.value
    }

    @Test func rejectsBadNamesWithAClearMessage() async throws {
        let (status, output) = try await create(["--organization", "has space", "--project", "p"])
        #expect(status != 0)
        #expect(output.contains("--organization"), "\(output)")
    }
}

/// `GET /readyz`'s body.
struct ReadinessReportBody: Decodable {
    var status: String
    var checks: [String: String]
}
