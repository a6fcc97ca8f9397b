import Contracts
import HTTPClient
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
    let api = try await RealtimeAPI(configuration: configuration, connection: connection, logger: logger)
    try await retryingAtStartup("nats", logger: logger, isRetriable: { ($0 as? NatsError)?.isRetriable ?? false }) {
        try await api.prepare()
    }
    let host = ServiceHost(
        name: .realtime,
        configuration: configuration.common,
        connection: connection,
        checks: [ReadinessCheck("jetstream") { try await jetStream.ping() }],
        endpoints: RealtimeEndpoints.make(store: api.store),
        work: [api.directory, HubShutdown(hub: api.hub)] + api.work,
        exposedHeaders: ChannelRoutes.exposedHeaders,
        registry: registry,
        logger: logger
    )
    api.addRoutes(to: host.router, authenticator: NatsAuthenticator(connection: connection))
    return host.makeServiceGroup()
}

/// Realtime's store and public routes: JetStream (with the S2 subset served for direct writers)
/// or S2 (direct writers go to S2; appends are copied to JetStream for waitpoints).
struct RealtimeAPI: Sendable {
    let store: any StreamStore
    let directory: SessionDirectory
    let hub: ChannelHub
    let channels: ChannelRoutes
    /// Served only over the JetStream store.
    let s2: S2Routes?
    let prepare: @Sendable () async throws -> Void
    /// What runs beside the routes for the store: with S2, revoking closed sessions' tokens.
    let work: [any Service]

    init(configuration: RealtimeConfiguration, connection: NatsConnection, logger: Logger) async throws {
        let jetStream = try JetStream(connection: connection)
        let directWrites: any DirectWriteIssuer
        let appended: AppendNotifier?
        let tokens = await ChannelTokens(
            secret: configuration.tokenSecret,
            lifetime: configuration.channelTokenLifetime
        )
        if let s2 = configuration.s2 {
            let http = HTTPClient(configuration: .init(poolSize: 32))
            let s2Store = S2Store(
                settings: .init(
                    endpoint: s2.endpoint,
                    basin: configuration.basin,
                    streamPrefix: s2.streamPrefix,
                    retentionSeconds: s2.retentionSeconds
                ),
                http: http,
                logger: logger,
                credentials: { _ in s2.accessToken }
            )
            store = s2Store
            let s2DirectWrites = S2DirectWrites(
                settings: .init(
                    accountEndpoint: s2.accountEndpoint,
                    endpoint: s2.endpoint,
                    basin: configuration.basin,
                    rootToken: s2.accessToken,
                    skipAccessTokens: s2.skipAccessTokens,
                    lifetime: configuration.channelTokenLifetime
                ),
                http: http,
                streamName: { s2Store.streamName($0) }
            )
            directWrites = s2DirectWrites
            work = [S2TokenRevoker(jetStream: jetStream, directWrites: s2DirectWrites, logger: logger)]
            appended = AppendNotifier(jetStream: jetStream)
            prepare = { _ = try await jetStream.createOrUpdateStream(AppendNotifier.streamConfiguration()) }
        } else {
            let jetStreamStore = JetStreamStore(jetStream: jetStream)
            store = jetStreamStore
            directWrites = LocalDirectWrites(
                tokens: tokens,
                endpoint: configuration.common.publicURL + "/realtime/s2/v1"
            )
            appended = nil
            prepare = { try await jetStreamStore.prepare() }
            work = []
        }
        directory = SessionDirectory(connection: connection, logger: logger)
        hub = ChannelHub(store: store, mailboxLimit: configuration.subscriberBuffer, logger: logger)
        channels = ChannelRoutes(
            directory: directory,
            store: store,
            hub: hub,
            directWrites: directWrites,
            writerSettings: .init(
                basin: configuration.basin,
                flushIntervalMilliseconds: configuration.flushIntervalMilliseconds,
                maxRetries: configuration.maxRetries
            ),
            appended: appended,
            pingInterval: configuration.pingInterval,
            logger: logger
        )
        s2 =
            configuration.s2 == nil
            ? S2Routes(
                directory: directory,
                store: store,
                hub: hub,
                tokens: tokens,
                pingInterval: configuration.pingInterval,
                logger: logger
            )
            : nil
    }

    func addRoutes(to router: Router<APIRequestContext>, authenticator: any Authenticator) {
        channels.add(to: router, authenticator: authenticator)
        s2?.add(to: router)
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
