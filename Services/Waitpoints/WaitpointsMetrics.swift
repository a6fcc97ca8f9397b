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

    /// Creates every series, so each is exported (at 0) before its first event.
    static func register() { _ = (recordsSeenByRedisOnly, recordsSettledInPostgres) }
}
