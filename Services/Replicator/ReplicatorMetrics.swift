import Metrics

/// The replicator's metrics (SPEC §7), created once after the bootstrap in `main`.
enum ReplicatorMetrics {
    enum Event: String { case insert, update, delete }

    /// How long ago the oldest transaction read but not yet in ClickHouse committed (0 when all
    /// of it is there): it grows while inserts fail. Updated at least every 200 ms.
    static let lag = Gauge(label: "replicator_replication_lag_seconds")
    static let batchSize = Recorder(label: "replicator_batch_size")
    static let rows = Counter(label: "replicator_rows_inserted_total")
    static let retries = Counter(label: "replicator_insert_retries_total")
    static let flushDuration = Timer(label: "replicator_flush_duration_seconds")

    static func batches(success: Bool) -> Counter {
        Counter(label: "replicator_batches_flushed_total", dimensions: [("success", success ? "true" : "false")])
    }

    static func events(_ event: Event) -> Counter {
        Counter(label: "replicator_events_total", dimensions: [("type", event.rawValue)])
    }
}
