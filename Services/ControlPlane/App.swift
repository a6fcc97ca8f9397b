import ArgumentParser
import Foundation
import ServiceKit
import ServiceLifecycle

/// `control-plane`: serves the sessions API (default), or runs an admin command.
@main
struct ControlPlaneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "control-plane",
        abstract: "Sessions control plane: tenancy, API keys, session CRUD and listing.",
        subcommands: [Serve.self, EnvironmentCommand.self, PrintOpenAPI.self],
        defaultSubcommand: Serve.self
    )
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the service (configured through SESSIONS_* environment variables; see the README)."
    )

    func run() async throws {
        let configuration = loadConfiguration("control-plane") {
            try ControlPlaneConfiguration(environment: Environment())
        }
        let (logger, registry) = Observability.bootstrap(
            label: "control-plane",
            logLevel: configuration.common.logLevel
        )
        ControlPlaneMetrics.register()
        try await buildServiceGroup(configuration, registry: registry, logger: logger).run()
    }
}

struct PrintOpenAPI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "openapi",
        abstract: "Print the OpenAPI 3.1 document of the public API (the one served at /api/openapi.json)."
    )

    func run() {
        FileHandle.standardOutput.write(Data((OpenAPIDocument.json + "\n").utf8))
    }
}
