import Contracts
import Foundation
import Hummingbird
import Logging
import NIOCore
import Nats
import Prometheus
import ServiceLifecycle
import UnixSignals

/// Assembles the one `ServiceGroup` each service binary runs.
///
/// Services start in this order and stop in the reverse one, so intake stops first:
/// the NATS connection, the service's own background `work`, its NATS service endpoints
/// (`$SRV` discovery included), and last the HTTP server (health, readiness, metrics and routes).
public struct ServiceHost {
    public var name: ServiceName
    public var configuration: CommonConfiguration
    public var connection: NatsConnection
    public var router: Router<APIRequestContext>
    /// The routes served, filled when the group is made; drives CORS preflights and 405s.
    public let routeTable = RouteTable()
    public var endpoints: [NatsEndpoint]
    public var work: [any Service]
    public var registry: PrometheusCollectorRegistry
    public var logger: Logger

    /// - Parameters:
    ///   - checks: the dependencies `GET /readyz` checks; NATS is always checked.
    ///   - exposedHeaders: response headers browsers may read (CORS), besides `X-Request-Id`.
    public init(
        name: ServiceName,
        configuration: CommonConfiguration,
        connection: NatsConnection,
        checks: [ReadinessCheck],
        endpoints: [NatsEndpoint] = [],
        work: [any Service] = [],
        exposedHeaders: [String] = [],
        registry: PrometheusCollectorRegistry,
        logger: Logger
    ) {
        self.name = name
        self.configuration = configuration
        self.connection = connection
        // HEAD wherever GET is (RFC 9110 §9.3.2): the GET's status and headers, no body.
        self.router = Router(context: APIRequestContext.self, options: .autoGenerateHeadEndpoints)
        self.endpoints = endpoints
        self.work = work
        self.registry = registry
        self.logger = logger
        let natsCheck = ReadinessCheck("nats") {
            guard connection.isConnected else { throw NatsError(.connectionFailed, message: "not connected") }
        }
        router.add(middleware: APIMiddleware(routes: routeTable, exposedHeaders: exposedHeaders))
        router.add(middleware: RequestMetricsMiddleware())
        router.addHealthRoutes(checks: [natsCheck] + checks, registry: registry, logger: logger)
    }

    /// The service group to `run()`; it returns after a graceful shutdown (SIGTERM or SIGINT).
    /// Records the router's routes for preflights and 405s; call after the last route is added.
    /// ``makeServiceGroup()`` calls it.
    public func sealRoutes() {
        routeTable.set(
            router.routes.map { route in
                let path = "\(route.path)"
                return RouteTable.Route(method: route.method.rawValue, path: path.hasPrefix("/") ? path : "/" + path)
            }
        )
    }

    public func makeServiceGroup() -> ServiceGroup {
        sealRoutes()
        let logger = self.logger
        let name = self.name
        let idleTimeout = TimeAmount.seconds(Int64(configuration.httpIdleTimeoutSeconds))
        let application = Application(
            router: router,
            // Closes connections that stall: silent before or inside a request, or taking none of
            // an answer that streams.
            server: .http1(
                configuration: .init(
                    additionalChannelHandlers: [StalledWriteCloser(timeout: idleTimeout), ContinueAnswerer()],
                    idleTimeout: idleTimeout
                )
            ),
            configuration: .init(
                address: .hostname(configuration.httpHost, port: configuration.httpPort),
                serverName: nil
            ),
            onServerRunning: { channel in
                logger.notice(
                    "Serving HTTP.",
                    metadata: ["http.port": "\(channel.localAddress?.port ?? 0)", "service": "\(name.rawValue)"]
                )
            },
            logger: logger
        )
        let discovery = NatsService(
            connection: connection,
            name: name.rawValue,
            version: ServiceName.version,
            description: "Sessions \(name.rawValue)",
            endpoints: endpoints,
            logger: logger
        )
        let parentWatch: [any Service] = configuration.parentPID.map { [ParentWatch(pid: $0, logger: logger)] } ?? []
        let services: [any Service] =
            [NatsConnectionService(connection: connection, logger: logger)] + work + [discovery, application]
            + parentWatch
        var groupConfiguration = ServiceGroupConfiguration(
            services: services.map {
                .init(
                    service: $0,
                    successTerminationBehavior: .gracefullyShutdownGroup,
                    failureTerminationBehavior: .gracefullyShutdownGroup
                )
            },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        groupConfiguration.maximumGracefulShutdownDuration = configuration.shutdownTimeout
        return ServiceGroup(configuration: groupConfiguration)
    }
}

/// Owns a NATS connection for the service group: logs its events, drains it at shutdown.
struct NatsConnectionService: Service {
    let connection: NatsConnection
    let logger: Logger

    func run() async throws {
        for await event in connection.events.cancelOnGracefulShutdown() {
            switch event {
            case .connected, .reconnected:
                logger.info(
                    "Connected to NATS.",
                    metadata: ["nats.url": "\(connection.configuration.url.passwordHidden)"]
                )
            case .disconnected:
                logger.warning(
                    "Disconnected from NATS; reconnecting.",
                    metadata: ["nats.url": "\(connection.configuration.url.passwordHidden)"]
                )
            case .closed:
                break
            case .asyncError(let subject, let message):
                logger.warning(
                    "NATS reported an error.",
                    metadata: ["nats.subject": "\(subject ?? "")", "error": "\(message)"]
                )
            }
        }
        await connection.drain()
    }
}

extension String {
    /// This URL with any password in it replaced, fit for a log.
    public var passwordHidden: String {
        guard var components = URLComponents(string: self), components.password != nil else { return self }
        components.password = "***"
        return components.string ?? "(a URL that could not be read)"
    }
}
