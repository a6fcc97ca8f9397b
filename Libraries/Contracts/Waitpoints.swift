import Foundation

/// Where a waitpoint is: `PENDING` until a record arrives (`COMPLETED`) or its timeout passes
/// (`TIMED_OUT`). It leaves `PENDING` at most once.
public enum WaitpointStatus: String, Codable, Sendable {
    case pending = "PENDING"
    case completed = "COMPLETED"
    case timedOut = "TIMED_OUT"
}

/// What a waitpoint completed with: the record's data (`type` `application/json`), or an error
/// when it timed out.
public struct WaitpointOutput: Codable, Sendable, Equatable {
    public var value: String
    public var type: String
    public var isError: Bool
    /// The sequence number of the record that completed the waitpoint (none when it timed out):
    /// the `lastSeqNum` of the task's next wait on the channel.
    public var seqNum: UInt64?

    public init(value: String, type: String = "application/json", isError: Bool = false, seqNum: UInt64? = nil) {
        self.value = value
        self.type = type
        self.isError = isError
        self.seqNum = seqNum
    }
}

/// A waitpoint as the API shows it.
public struct WaitpointItem: Codable, Sendable, Equatable {
    /// `waitpoint_…`.
    public var id: String
    public var status: WaitpointStatus
    public var runId: String
    /// The session's friendlyId.
    public var session: String
    public var io: ChannelIO
    public var output: WaitpointOutput?
    public var timeoutAt: Date?
    public var idempotencyKey: String?
    public var idempotencyKeyExpiresAt: Date?
    public var tags: [String]
    public var createdAt: Date
    public var completedAt: Date?
    public var environmentId: String

    public init(
        id: String,
        status: WaitpointStatus,
        runId: String,
        session: String,
        io: ChannelIO,
        output: WaitpointOutput?,
        timeoutAt: Date?,
        idempotencyKey: String?,
        idempotencyKeyExpiresAt: Date?,
        tags: [String],
        createdAt: Date,
        completedAt: Date?,
        environmentId: String
    ) {
        self.id = id
        self.status = status
        self.runId = runId
        self.session = session
        self.io = io
        self.output = output
        self.timeoutAt = timeoutAt
        self.idempotencyKey = idempotencyKey
        self.idempotencyKeyExpiresAt = idempotencyKeyExpiresAt
        self.tags = tags
        self.createdAt = createdAt
        self.completedAt = completedAt
        self.environmentId = environmentId
    }
}

/// Waitpoints that left `PENDING` the same way, in one environment, at about the same moment
/// (the waiters one record completed, a sweep's timeouts): published durably for run engines,
/// 1 to 100 per message. Delivery is at least once: a consumer keys its work by waitpoint id.
public struct WaitpointEvent: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case completed
        case timedOut = "timed_out"
    }

    public var kind: Kind
    public var waitpoints: [WaitpointItem]

    public init(kind: Kind, waitpoints: [WaitpointItem]) {
        self.kind = kind
        self.waitpoints = waitpoints
    }
}

extension Subjects {
    /// The JetStream stream of waitpoint events.
    public static let waitpointEventsStream = "WAITPOINT_EVENTS"
    /// `events.waitpoints.{environmentId}.{kind}`.
    public static func waitpointEvent(environmentId: String, kind: WaitpointEvent.Kind) -> String {
        "events.waitpoints.\(environmentId).\(kind.rawValue)"
    }
    public static let allWaitpointEvents = "events.waitpoints.>"
    /// Core NATS, best effort: the waitpoints (`[WaitpointItem]`) that just left `PENDING`
    /// together, for long-polling waiters on any instance.
    public static let waitpointsSettled = "waitpoints.settled"
}
