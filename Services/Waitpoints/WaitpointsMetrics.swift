import Metrics

/// The waitpoints service's metrics, created once (after the bootstrap in `main`).
enum WaitpointsMetrics {
    /// Appended records handled, by what was asked about them: `redis` alone (the channel had no
    /// waiter), or `postgres` too (it had waiters, or Redis could not tell).
    static let recordsSeenByRedisOnly = Counter(
        label: "waitpoints_appended_records_total",
        dimensions: [("consulted", "redis")]
    )
    static let recordsSettledInPostgres = Counter(
        label: "waitpoints_appended_records_total",
        dimensions: [("consulted", "postgres")]
    )

    /// Of all instances' waitpoints, read from PostgreSQL every 5 s by each instance's sweeper.
    static let pending = Gauge(label: "waitpoints_pending")
    static let unregistered = Gauge(label: "waitpoints_unregistered")
    static let timeoutsOverdue = Gauge(label: "waitpoints_timeouts_overdue_seconds")
    static let eventsUnpublished = Gauge(label: "waitpoints_oldest_unpublished_event_age_seconds")
    /// Appended records the durable consumer has not handled yet (not delivered, or delivered
    /// and not acknowledged): wake-ups waiting behind them. Read from JetStream every 5 s.
    static let recordsBacklog = Gauge(label: "waitpoints_appended_records_backlog")

    static func record(_ backlog: WaitpointBacklog) {
        pending.record(backlog.pending)
        unregistered.record(backlog.unregistered)
        timeoutsOverdue.record(backlog.overdueSeconds)
        eventsUnpublished.record(backlog.unpublishedSeconds)
    }

    /// Creates every series, so each is exported (at 0) before its first event.
    static func register() {
        _ = (recordsSeenByRedisOnly, recordsSettledInPostgres)
        _ = (pending, unregistered, timeoutsOverdue, eventsUnpublished, recordsBacklog)
    }
}
