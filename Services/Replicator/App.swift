import ServiceKit
import ServiceLifecycle

@main
struct App {
    static func main() async throws {
        let configuration = loadConfiguration("replicator") { try ReplicatorConfiguration(environment: Environment()) }
        let (logger, registry) = Observability.bootstrap(label: "replicator", logLevel: configuration.common.logLevel)
        ReplicatorMetrics.register()
        try await buildServiceGroup(configuration, registry: registry, logger: logger).run()
    }
}
