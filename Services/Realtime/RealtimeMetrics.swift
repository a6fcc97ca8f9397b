import Metrics

/// Realtime's metrics, created once (after the bootstrap in `main`).
enum RealtimeMetrics {
    /// Records stored through the HTTP API and the S2 subset.
    static let appendedRecords = Counter(label: "realtime_appended_records_total")
    /// SSE streams open now, and channels with a live upstream feed.
    static let subscribers = Gauge(label: "realtime_sse_subscribers")
    static let feeds = Gauge(label: "realtime_channel_feeds")
    /// Subscribers ended because they fell too far behind.
    static let slowSubscribers = Counter(label: "realtime_slow_subscribers_disconnected_total")

    /// Creates every series, so each is exported (at 0) before its first event.
    static func register() { _ = (appendedRecords, subscribers, feeds, slowSubscribers) }
}
