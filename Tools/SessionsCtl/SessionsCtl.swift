import ArgumentParser
import Foundation

/// `sessionsctl`: the Sessions API from a terminal.
@main
struct SessionsCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sessionsctl",
        abstract: "Create, inspect, tail, append to, wait on and close sessions over the Sessions HTTP API.",
        discussion: """
            Reads SESSIONS_URL (default http://127.0.0.1:8080) and SESSIONS_API_KEY from the environment \
            (`source .dev/sessions.env` after `make up`); --url and --api-key override them.

            Exit codes: 0 success; 1 server error or anything unexpected; 2 the request was rejected \
            (400, 409, 413); 3 not found; 4 authentication or permission failed (401, 403); 5 the server \
            is unreachable; 6 the waitpoint timed out; 64 bad command-line usage.
            """,
        subcommands: [
            EnvironmentCommand.self, Create.self, Get.self, List.self, Append.self, Tail.self, Close.self,
            Wait.self, Token.self,
        ]
    )
}

/// Options every command that talks to the API takes.
struct APIOptions: ParsableArguments {
    @Option(help: "Base URL of the API (default: $SESSIONS_URL, else http://127.0.0.1:8080).")
    var url: String?

    @Option(help: "Secret API key or public access token (default: $SESSIONS_API_KEY).")
    var apiKey: String?

    @Flag(help: "Print JSON instead of text.")
    var json = false

    /// The API client these options describe.
    func client(requiresKey: Bool = true) throws -> SessionsClient {
        let environment = ProcessInfo.processInfo.environment
        let key = apiKey ?? environment["SESSIONS_API_KEY"]
        if requiresKey && (key ?? "").isEmpty {
            throw CLIError(.usage, "no API key: pass --api-key or set SESSIONS_API_KEY")
        }
        let base = url ?? environment["SESSIONS_URL"] ?? "http://127.0.0.1:8080"
        guard let parsed = URL(string: base), ["http", "https"].contains(parsed.scheme ?? "") else {
            throw CLIError(.usage, "--url must be an http(s) URL, got \(base)")
        }
        return SessionsClient(baseURL: base.hasSuffix("/") ? String(base.dropLast()) : base, apiKey: key)
    }
}
