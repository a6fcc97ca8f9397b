import ServiceKit
import ServiceLifecycle

@main
struct App {
    static func main() async throws {
        let configuration = loadConfiguration("realtime") { try RealtimeConfiguration(environment: Environment()) }
        let (logger, registry) = Observability.bootstrap(label: "realtime", logLevel: configuration.common.logLevel)
        RealtimeMetrics.register()
        try await buildServiceGroup(configuration, registry: registry, logger: logger).run()
    }
}
