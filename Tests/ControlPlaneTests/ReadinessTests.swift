import Contracts
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Nats
import Prometheus
import ServiceKit
import TestSupport
import Testing

/// `GET /readyz`: an essential dependency that is down makes a service unready (503); one it
/// can partly work without leaves it ready but `degraded` (200), so that a router does not take
/// every instance out for a partial outage.
@Suite(.timeLimit(.minutes(1))) struct ReadinessTests {
    struct Failure: Error {}

    @Test(arguments: [
        (true, true, 200, "ready"),
        (true, false, 200, "degraded"),
        (false, true, 503, "unavailable"),
    ])
    func readinessWeighsEachCheck(essentialUp: Bool, optionalUp: Bool, status: Int, state: String) async throws {
        let connection = try await NatsConnection.connect(.init(url: try TestServers.natsURL, name: "readiness"))
        let host = ServiceHost(
            name: .controlPlane,
            configuration: try CommonConfiguration(environment: Environment([:]), defaultPort: 0),
            connection: connection,
            checks: [
                ReadinessCheck("essential") { if !essentialUp { throw Failure() } },
                ReadinessCheck("optional", essential: false) { if !optionalUp { throw Failure() } },
            ],
            registry: PrometheusCollectorRegistry(),
            logger: Logger(label: "readiness")
        )
        host.sealRoutes()
        try await Application(router: host.router).test(.router) { client in
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status.code == status)
                let body = String(buffer: response.body)
                #expect(body.contains(#""status":"\#(state)""#), "\(body)")
                #expect(body.contains(#""optional":"\#(optionalUp ? "ok" : "unavailable")""#), "\(body)")
            }
        }
        await connection.close()
    }
}
