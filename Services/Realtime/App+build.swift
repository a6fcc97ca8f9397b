import Contracts
import Logging
import Nats
import Prometheus
import ServiceKit
import ServiceLifecycle

/// Connects realtime's dependencies and assembles its services.
func buildServiceGroup(
    _ configuration: RealtimeConfiguration,
    registry: PrometheusCollectorRegistry,
    logger: Logger
) async throws -> ServiceGroup {
    let connection = try await NatsConnection.connect(.init(url: configuration.common.natsURL, name: "realtime"))
    let jetStream = try JetStream(connection: connection)
    let host = ServiceHost(
        name: .realtime,
        configuration: configuration.common,
        connection: connection,
        checks: [ReadinessCheck("jetstream") { try await jetStream.ping() }],
        registry: registry,
        logger: logger
    )
    return host.makeServiceGroup()
}
