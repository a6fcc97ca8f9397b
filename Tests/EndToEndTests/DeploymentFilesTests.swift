import Foundation
import TestSupport
import Testing

/// The compose deployment checked without Docker: `compose/check.py` against the code, the
/// service READMEs, the ingress template and the served OpenAPI document.
@Suite(.timeLimit(.minutes(1))) struct DeploymentFilesTests {
    /// Runs the checker on the compose folder in `folder`; returns its exit status and output.
    func check(composeFolder folder: URL) async throws -> (status: Int32, output: String) {
        let printer = try Command(ServiceProcess.binaryDirectory.appendingPathComponent("control-plane"), ["openapi"])
        #expect(try await printer.finish() == 0)
        let checker = try Command(
            try TestServers.python,
            [
                TestServers.repositoryRoot.appendingPathComponent("compose/check.py").path,
                "--openapi", printer.stdout.path,
                "--compose", folder.appendingPathComponent("docker-compose.yml").path,
            ]
        )
        let status = try await checker.finish()
        return (status, checker.output + checker.errors)
    }

    @Test func composeFilesAgreeWithTheCodeTheReadmesAndTheAPI() async throws {
        let result = try await check(composeFolder: TestServers.repositoryRoot.appendingPathComponent("compose"))
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("compose OK"))
    }

    @Test func theCheckerCatchesAnUnknownKeyAndAnUnroutedPath() async throws {
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent(TestServers.uniqueName("compose"))
        try FileManager.default.copyItem(at: TestServers.repositoryRoot.appendingPathComponent("compose"), to: copy)
        defer { try? FileManager.default.removeItem(at: copy) }
        let composeFile = copy.appendingPathComponent("docker-compose.yml")
        let compose = try String(contentsOf: composeFile, encoding: .utf8)
        try compose.replacingOccurrences(
            of: #"SESSIONS_HTTP_PORT: "3002""#,
            with: "SESSIONS_HTTP_PORT: \"3002\"\n      SESSIONS_NOT_A_KEY: \"1\""
        ).write(to: composeFile, atomically: true, encoding: .utf8)
        let template = copy.appendingPathComponent("nginx/sessions.conf.template")
        let routes = try String(contentsOf: template, encoding: .utf8).split(
            separator: "\n",
            omittingEmptySubsequences: false
        )
        try routes.filter { !$0.contains("location /api/v1/admin/") }.joined(separator: "\n")
            .write(to: template, atomically: true, encoding: .utf8)

        let result = try await check(composeFolder: copy)
        #expect(result.status == 1)
        #expect(result.output.contains("SESSIONS_NOT_A_KEY"), "\(result.output)")
        #expect(result.output.contains("/api/v1/admin/environments"), "\(result.output)")
    }
}
