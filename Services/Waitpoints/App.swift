import ServiceKit
import ServiceLifecycle

@main
struct App {
    static func main() async throws {
        let configuration = loadConfiguration("waitpoints") { try WaitpointsConfiguration(environment: Environment()) }
        let (logger, registry) = Observability.bootstrap(label: "waitpoints", logLevel: configuration.common.logLevel)
        WaitpointsMetrics.register()
        try await buildServiceGroup(configuration, registry: registry, logger: logger).run()
    }
}
