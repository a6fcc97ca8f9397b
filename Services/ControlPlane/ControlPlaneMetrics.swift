import Metrics

/// The control plane's own metrics, created once after the bootstrap in `main`.
enum ControlPlaneMetrics {
    /// How long the oldest session event not yet on JetStream has waited in the outbox (0 when
    /// none), as the relay last saw it (every 250 ms): it grows while NATS is unreachable.
    static let outboxAge = Gauge(label: "control_plane_outbox_oldest_event_age_seconds")
    /// Session events published from the outbox.
    static let eventsRelayed = Counter(label: "control_plane_session_events_relayed_total")
    /// Outbox rows that could not be read as an event, moved to `session_events_failed`.
    static let eventsSetAside = Counter(label: "control_plane_session_events_set_aside_total")

    /// Creates every series, so each is exported (at 0) before its first event.
    static func register() { _ = (outboxAge, eventsRelayed, eventsSetAside) }
}
