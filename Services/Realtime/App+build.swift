import Contracts
import Hummingbird
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
    if configuration.isTokenSecretGenerated {
        logger.warning(
            "SESSIONS_REALTIME_TOKEN_SECRET is not set: channel tokens work only on this instance.",
            metadata: ["config.key": "SESSIONS_REALTIME_TOKEN_SECRET"]
        )
    }
    let connection = try await NatsConnection.connect(.init(url: configuration.common.natsURL, name: "realtime"))
    let jetStream = try JetStream(connection: connection)
    let store = JetStreamStore(jetStream: jetStream)
    try await retryingAtStartup("nats", logger: logger, isRetriable: { ($0 as? NatsError)?.isRetriable ?? false }) {
        try await store.prepare()
    }
    let api = await RealtimeAPI(
        configuration: configuration,
        connection: connection,
        store: store,
        logger: logger
    )
    let host = ServiceHost(
        name: .realtime,
        configuration: configuration.common,
        connection: connection,
        checks: [ReadinessCheck("jetstream") { try await jetStream.ping() }],
        endpoints: RealtimeEndpoints.make(store: store),
        work: [api.directory, HubShutdown(hub: api.hub)],
        exposedHeaders: ChannelRoutes.exposedHeaders,
        registry: registry,
        logger: logger
    )
    api.addRoutes(to: host.router, authenticator: NatsAuthenticator(connection: connection))
    return host.makeServiceGroup()
}

/// Realtime's public routes over its store, hub and session directory.
struct RealtimeAPI: Sendable {
    let directory: SessionDirectory
    let hub: ChannelHub
    let channels: ChannelRoutes
    let s2: S2Routes

    init(configuration: RealtimeConfiguration, connection: NatsConnection, store: any StreamStore, logger: Logger) async
    {
        directory = SessionDirectory(connection: connection, logger: logger)
        hub = ChannelHub(store: store, mailboxLimit: configuration.subscriberBuffer, logger: logger)
        let tokens = await ChannelTokens(
            secret: configuration.tokenSecret,
            lifetime: configuration.channelTokenLifetime
        )
        channels = ChannelRoutes(
            directory: directory,
            store: store,
            hub: hub,
            tokens: tokens,
            directWrites: .init(
                endpoint: configuration.common.publicURL + "/realtime/s2",
                basin: configuration.basin,
                flushIntervalMilliseconds: configuration.flushIntervalMilliseconds,
                maxRetries: configuration.maxRetries
            ),
            pingInterval: configuration.pingInterval,
            logger: logger
        )
        s2 = S2Routes(store: store, hub: hub, tokens: tokens, pingInterval: configuration.pingInterval, logger: logger)
    }

    func addRoutes(to router: Router<APIRequestContext>, authenticator: any Authenticator) {
        channels.add(to: router, authenticator: authenticator)
        s2.add(to: router)
    }
}

/// Ends every SSE stream when the service shuts down, so the HTTP server can finish.
struct HubShutdown: Service {
    let hub: ChannelHub

    func run() async throws {
        try? await gracefulShutdown()
        hub.shutdown()
    }
}
