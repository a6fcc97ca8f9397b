import Contracts
import Foundation
import HTTPClient
import TestSupport
import Testing

/// The nginx ingress of `compose/nginx/sessions.conf.template`, in front of the fixture's
/// services: what nginx answers itself is JSON with an X-Request-Id, and what the services
/// accept passes through.
@Suite(.timeLimit(.minutes(1))) struct IngressTests {
    @Test func theIngressAnswersItsOwnErrorsInJSONAndPassesWhatTheServicesTake() async throws {
        let stack = try await ServicesFixture.shared.value
        let ingress = try Ingress(stack)
        defer { ingress.stop() }
        #expect(
            try await TestServers.waitUntil { (try? await stack.get(ingress.url + "/healthz/realtime"))?.status == 200 }
        )
        let session = try await stack.createSession()

        let nul = try await stack.get(ingress.url + "/api/v1/sessions/x%00y")
        #expect(nul.status == 400 && nul.headers["X-Request-Id"] != nil, "\(nul.status)")
        #expect(String(decoding: nul.body, as: UTF8.self).hasPrefix(#"{"error":"Bad Request"#))

        // A method nginx itself refuses (TRACE) gets JSON too.
        let trace = try await stack.http.execute(HTTPRequest(method: "TRACE", url: ingress.url + "/api/v1/sessions"))
        #expect(trace.status == 405 && trace.headers["X-Request-Id"] != nil, "\(trace.status)")
        #expect(String(decoding: trace.body, as: UTF8.self).contains(#""error""#))

        let long = try await stack.get(ingress.url + "/api/v1/sessions/" + String(repeating: "a", count: 10_000))
        #expect(long.status == 414 && String(decoding: long.body, as: UTF8.self).contains(#""error""#))

        // An append without Content-Length is refused by the ingress as by the service, whether
        // nginx would have forwarded it with a length or without.
        // So is a create, which nginx buffers and would have forwarded with a length it added.
        for (path, body) in [
            ("/realtime/v1/sessions/\(session.id)/out/append", "hello"), ("/api/v1/sessions", #"{"type":"chunked"}"#),
        ] {
            let chunked = try await stack.http.execute(
                HTTPRequest(
                    method: "POST",
                    url: ingress.url + path,
                    headers: ["Authorization": "Bearer \(stack.apiKey)", "Transfer-Encoding": "chunked"],
                    body: Data(body.utf8)
                )
            )
            #expect(chunked.status == 413, "\(path): \(chunked.status)")
            #expect(String(decoding: chunked.body, as: UTF8.self).contains("Content-Length is required"))
        }
        // A POST with no body at all (neither header) is not one of them: a body-less close.
        let bodyless = try await stack.http.execute(
            HTTPRequest(
                method: "POST",
                url: ingress.url + "/api/v1/sessions/\(try await stack.createSession().id)/close",
                headers: ["Authorization": "Bearer \(stack.apiKey)"]
            )
        )
        #expect(bodyless.status == 200, "\(bodyless.status) \(String(decoding: bodyless.body, as: UTF8.self))")

        // An S2 append of 1 MiB of records (S2's measure) is over 1 MiB of JSON; it goes through.
        let initialized = try await stack.http.execute(
            HTTPRequest(
                method: "PUT",
                url: ingress.url + "/realtime/v1/sessions/\(session.id)/in",
                headers: ["Authorization": "Bearer \(stack.apiKey)"]
            )
        )
        let token = try #require(initialized.headers["X-S2-Access-Token"])
        let records = (0..<1000).map { _ in ["body": String(repeating: "r", count: 1040)] }
        let s2Append = try await stack.http.execute(
            HTTPRequest(
                method: "POST",
                url: ingress.url + "/realtime/s2/v1/streams/sessions%2F\(session.id)%2Fin/records",
                headers: ["Authorization": "Bearer \(token)", "Content-Type": "application/json"],
                body: try JSONEncoder().encode(["records": records])
            )
        )
        #expect(s2Append.status == 200, "\(s2Append.status) \(String(decoding: s2Append.body, as: UTF8.self))")

        // A run id holding an encoded "/" reaches waitpoints.
        let wait = try await stack.wait(
            ["session": .string(session.id), "io": "in", "timeout": "1s"],
            base: ingress.url,
            run: "run%2Fwith-slash"
        )
        #expect(wait.status == 200, "\(String(decoding: wait.body, as: UTF8.self))")
    }
}

/// nginx with the ingress template, on a free port, forwarding to the fixture's services.
final class Ingress: Sendable {
    let url: String
    private let process: Process
    private let folder: URL

    init(_ stack: ServicesFixture) throws {
        let port = try TestServers.freePort()
        url = "http://127.0.0.1:\(port)"
        folder = FileManager.default.temporaryDirectory.appendingPathComponent(TestServers.uniqueName("ingress"))
        try FileManager.default.createDirectory(
            at: folder.appendingPathComponent("tmp"),
            withIntermediateDirectories: true
        )
        var fragment = try String(
            contentsOf: TestServers.repositoryRoot.appendingPathComponent("compose/nginx/sessions.conf.template"),
            encoding: .utf8
        )
        for (placeholder, address) in [
            ("SESSIONS_INGRESS_LISTEN", "127.0.0.1:\(port)"),
            ("SESSIONS_INGRESS_ACCESS_LOG", folder.appendingPathComponent("access.log").path),
            ("SESSIONS_CONTROL_PLANE_ADDR", "127.0.0.1:\(stack.controlPlane.port)"),
            ("SESSIONS_REALTIME_ADDR", "127.0.0.1:\(stack.realtime[0].port)"),
            ("SESSIONS_WAITPOINTS_ADDR", "127.0.0.1:\(stack.waitpoints.port)"),
            ("SESSIONS_REPLICATOR_ADDR", "127.0.0.1:\(stack.replicator.port)"),
        ] {
            fragment = fragment.replacingOccurrences(of: "${\(placeholder)}", with: address)
        }
        let temp = folder.appendingPathComponent("tmp").path
        let configuration = """
            \(geteuid() == 0 ? "user nobody nogroup;" : "")
            daemon off;
            worker_processes 1;
            pid \(folder.path)/nginx.pid;
            error_log \(folder.path)/error.log notice;
            events { worker_connections 256; }
            http {
                access_log off;
                client_body_temp_path \(temp)/client_body;
                proxy_temp_path \(temp)/proxy;
                fastcgi_temp_path \(temp)/fastcgi;
                uwsgi_temp_path \(temp)/uwsgi;
                scgi_temp_path \(temp)/scgi;
            \(fragment)
            }
            """
        let file = folder.appendingPathComponent("nginx.conf")
        try configuration.write(to: file, atomically: true, encoding: .utf8)
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/nginx")
        process.arguments = ["-p", folder.path, "-c", file.path, "-e", folder.path + "/error.log"]
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: folder)
    }
}
