import Logging
import Metrics
import Prometheus

/// Sets up logging (to stderr) and Prometheus metrics once per process, in `main`.
public enum Observability {
    /// Bootstraps both systems and returns the service's root logger and its metrics registry.
    public static func bootstrap(label: String, logLevel: String) -> (Logger, PrometheusCollectorRegistry) {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return (Logger(label: label), registry)
    }
}
