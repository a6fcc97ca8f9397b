import Contracts
import Foundation
import Hummingbird
import Logging
import Prometheus

/// One dependency a service uses; `check` throws when it is not reachable. Without an
/// `essential` one the service cannot do its work; without another it does part of it (the
/// control plane lists nothing without ClickHouse, but creates and reads sessions): it stays
/// ready, reported `degraded`, so that a router does not turn a partial outage into a full one.
public struct ReadinessCheck: Sendable {
    public var name: String
    public var essential: Bool
    public var check: @Sendable () async throws -> Void

    public init(_ name: String, essential: Bool = true, check: @escaping @Sendable () async throws -> Void) {
        self.name = name
        self.essential = essential
        self.check = check
    }
}

/// The report `GET /readyz` answers with.
public struct ReadinessReport: Codable, Sendable, Equatable {
    /// `ready`, `degraded` (a dependency that is not essential is down; still 200) or
    /// `unavailable` (503).
    public var status: String
    /// Each dependency's state: `ok` or `unavailable`.
    public var checks: [String: String]
}

extension Router {
    /// Adds `GET /healthz` (the process is alive), `GET /readyz` (every dependency answers within
    /// `timeout`; 503 otherwise — details go to the log, not the response) and `GET /metrics`
    /// (Prometheus text format).
    public func addHealthRoutes(
        checks: [ReadinessCheck],
        registry: PrometheusCollectorRegistry,
        timeout: Duration = .seconds(2),
        logger: Logger
    ) {
        get("healthz") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: #"{"status":"ok"}"#))
            )
        }
        get("readyz") { _, _ in
            let results = await withTaskGroup(of: (ReadinessCheck, Bool).self) { group in
                for check in checks {
                    group.addTask {
                        do {
                            try await withTimeout(timeout) { try await check.check() }
                            return (check, true)
                        } catch {
                            logger.warning(
                                "A readiness check failed.",
                                metadata: ["check": "\(check.name)", "error": "\(error)"]
                            )
                            return (check, false)
                        }
                    }
                }
                return await group.reduce(into: [(ReadinessCheck, Bool)]()) { $0.append($1) }
            }
            let ready = results.allSatisfy { check, ok in ok || !check.essential }
            let report = ReadinessReport(
                status: !ready ? "unavailable" : results.allSatisfy(\.1) ? "ready" : "degraded",
                checks: Dictionary(results.map { ($0.0.name, $0.1 ? "ok" : "unavailable") }) { $0 == "ok" ? $1 : $0 }
            )
            let body = try JSONEncoder.sessions.encode(report)
            return Response(
                status: ready ? .ok : .serviceUnavailable,
                headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: body))
            )
        }
        get("metrics") { _, _ in
            var buffer: [UInt8] = []
            registry.emit(into: &buffer)
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: buffer))
            )
        }
    }
}

/// The time limit of an operation passed.
public struct TimeoutError: Error, CustomStringConvertible {
    public var description: String { "the operation timed out" }
}

/// Runs `operation`, throwing ``TimeoutError`` (and cancelling it) after `timeout`.
public func withTimeout<Result: Sendable>(
    _ timeout: Duration,
    _ operation: @escaping @Sendable () async throws -> Result
) async throws -> Result {
    try await withThrowingTaskGroup(of: Result?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        defer { group.cancelAll() }
        guard let result = try await group.next() ?? nil else { throw TimeoutError() }
        return result
    }
}
