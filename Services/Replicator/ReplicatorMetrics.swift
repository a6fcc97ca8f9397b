import Metrics

/// The replicator's metrics (SPEC §7), created once after the bootstrap in `main`.
enum ReplicatorMetrics {
    enum Event: String, CaseIterable { case insert, update, delete }

    /// How long ago the oldest transaction read but not yet in ClickHouse committed (0 when all
    /// of it is there): it grows while inserts fail. Updated at least every 200 ms.
    static let lag = Gauge(label: "replicator_replication_lag_seconds")
    /// 1 while this instance leads replication, 0 on standby.
    static let leader = Gauge(label: "replicator_leader")
    /// Replication stopped by an error and started again from the slot (the lag above is not
    /// updated while it is down: a rising count is the sign of a replicator that cannot read).
    static let restarts = Counter(label: "replicator_restarts_total")
    static let batchSize = Recorder(label: "replicator_batch_size")
    static let rows = Counter(label: "replicator_rows_inserted_total")
    static let retries = Counter(label: "replicator_insert_retries_total")
    static let flushDuration = Timer(label: "replicator_flush_duration_seconds")

    static func batches(success: Bool) -> Counter {
        Counter(label: "replicator_batches_flushed_total", dimensions: [("success", success ? "true" : "false")])
    }

    /// Creates every series, so each is exported (at 0) before its first event: the first
    /// failed batch or retry is the one to alert on.
    static func register() {
        _ = (lag, leader, restarts, batchSize, rows, retries, flushDuration)
        _ = [batches(success: true), batches(success: false)]
        _ = Event.allCases.map(events)
    }

    static func events(_ event: Event) -> Counter {
        Counter(label: "replicator_events_total", dimensions: [("type", event.rawValue)])
    }
}
