/// The four deployable services: their NATS service names and the release version they report.
public enum ServiceName: String, Sendable, CaseIterable, Codable {
    case controlPlane = "control-plane"
    case realtime
    case replicator
    case waitpoints

    /// The release version every service reports in `$SRV.INFO` (SemVer).
    public static let version = "0.1.0"
}
