import Foundation

/// A session's derived status: `CLOSED` once closed, else `EXPIRED` once `expiresAt` passed,
/// else `ACTIVE`. Never stored.
public enum SessionStatus: String, Codable, Sendable, CaseIterable {
    case active = "ACTIVE"
    case closed = "CLOSED"
    case expired = "EXPIRED"
}

/// The kinds of environment.
public enum EnvironmentType: String, Codable, Sendable, CaseIterable {
    case development = "DEVELOPMENT"
    case staging = "STAGING"
    case production = "PRODUCTION"
    case preview = "PREVIEW"
}

/// A session as stored: everything the control plane knows, including its scoping ids.
/// Sent between services (`sessions.resolve`, lifecycle events); never shown to users as is.
public struct SessionRecord: Codable, Sendable, Equatable {
    /// Internal id (time-ordered, cuid-like).
    public var id: String
    /// `session_` + id; the id users see.
    public var friendlyId: String
    public var externalId: String?
    public var type: String
    public var taskIdentifier: String?
    public var tags: [String]
    public var metadata: JSONValue?
    public var triggerConfig: JSONValue?
    public var organizationId: String
    public var projectId: String
    public var environmentId: String
    public var environmentType: EnvironmentType
    public var closedAt: Date?
    public var closedReason: String?
    public var expiresAt: Date?
    public var createdAt: Date
    public var updatedAt: Date

    public init(
        id: String,
        friendlyId: String,
        externalId: String?,
        type: String,
        taskIdentifier: String?,
        tags: [String],
        metadata: JSONValue?,
        triggerConfig: JSONValue?,
        organizationId: String,
        projectId: String,
        environmentId: String,
        environmentType: EnvironmentType,
        closedAt: Date?,
        closedReason: String?,
        expiresAt: Date?,
        createdAt: Date,
        updatedAt: Date
    ) {
        self.id = id
        self.friendlyId = friendlyId
        self.externalId = externalId
        self.type = type
        self.taskIdentifier = taskIdentifier
        self.tags = tags
        self.metadata = metadata
        self.triggerConfig = triggerConfig
        self.organizationId = organizationId
        self.projectId = projectId
        self.environmentId = environmentId
        self.environmentType = environmentType
        self.closedAt = closedAt
        self.closedReason = closedReason
        self.expiresAt = expiresAt
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }

    /// The status at `now`.
    public func status(at now: Date = Date()) -> SessionStatus {
        if closedAt != nil { return .closed }
        if let expiresAt, expiresAt <= now { return .expired }
        return .active
    }

    /// The key its channels and scopes are addressed by: the externalId when it has one.
    public var addressingKey: String { externalId ?? friendlyId }

    /// The public shape.
    public func item(at now: Date = Date()) -> SessionItem {
        SessionItem(
            id: friendlyId,
            externalId: externalId,
            type: type,
            taskIdentifier: taskIdentifier,
            tags: tags,
            metadata: metadata,
            closedAt: closedAt,
            closedReason: closedReason,
            expiresAt: expiresAt,
            createdAt: createdAt,
            updatedAt: updatedAt,
            status: status(at: now)
        )
    }
}

/// A session as the public API shows it.
public struct SessionItem: Codable, Sendable, Equatable {
    /// The friendlyId (`session_…`).
    public var id: String
    public var externalId: String?
    public var type: String
    public var taskIdentifier: String?
    public var tags: [String]
    public var metadata: JSONValue?
    public var closedAt: Date?
    public var closedReason: String?
    public var expiresAt: Date?
    public var createdAt: Date
    public var updatedAt: Date
    public var status: SessionStatus

    public init(
        id: String,
        externalId: String?,
        type: String,
        taskIdentifier: String?,
        tags: [String],
        metadata: JSONValue?,
        closedAt: Date?,
        closedReason: String?,
        expiresAt: Date?,
        createdAt: Date,
        updatedAt: Date,
        status: SessionStatus
    ) {
        self.id = id
        self.externalId = externalId
        self.type = type
        self.taskIdentifier = taskIdentifier
        self.tags = tags
        self.metadata = metadata
        self.closedAt = closedAt
        self.closedReason = closedReason
        self.expiresAt = expiresAt
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.status = status
    }

    enum CodingKeys: String, CodingKey {
        case id, externalId, type, taskIdentifier, tags, metadata, closedAt, closedReason, expiresAt, createdAt,
            updatedAt, status
    }

    /// Encodes every key, nulls included, so clients see the whole shape.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(externalId, forKey: .externalId)
        try container.encode(type, forKey: .type)
        try container.encode(taskIdentifier, forKey: .taskIdentifier)
        try container.encode(tags, forKey: .tags)
        try container.encode(metadata ?? .null, forKey: .metadata)
        try container.encode(closedAt, forKey: .closedAt)
        try container.encode(closedReason, forKey: .closedReason)
        try container.encode(expiresAt, forKey: .expiresAt)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encode(updatedAt, forKey: .updatedAt)
        try container.encode(status, forKey: .status)
    }
}

/// `POST /api/v1/sessions`' answer: the session plus a session-scoped token and whether it
/// already existed.
public struct CreatedSession: Codable, Sendable, Equatable {
    public var session: SessionItem
    public var publicAccessToken: String
    public var isCached: Bool

    public init(session: SessionItem, publicAccessToken: String, isCached: Bool) {
        self.session = session
        self.publicAccessToken = publicAccessToken
        self.isCached = isCached
    }

    enum CodingKeys: String, CodingKey { case publicAccessToken, isCached }

    public init(from decoder: any Decoder) throws {
        session = try SessionItem(from: decoder)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        publicAccessToken = try container.decode(String.self, forKey: .publicAccessToken)
        isCached = try container.decode(Bool.self, forKey: .isCached)
    }

    public func encode(to encoder: any Encoder) throws {
        try session.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(publicAccessToken, forKey: .publicAccessToken)
        try container.encode(isCached, forKey: .isCached)
    }
}

/// JSON coding with ISO-8601 UTC dates with milliseconds, as the API sends them.
extension JSONEncoder {
    public static var sessions: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(ISO8601.string(from: date))
        }
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}

extension JSONDecoder {
    public static var sessions: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = ISO8601.date(from: text) else {
                throw DecodingError.dataCorrupted(
                    .init(codingPath: decoder.codingPath, debugDescription: "not an ISO-8601 date")
                )
            }
            return date
        }
        return decoder
    }
}

/// ISO-8601 UTC with milliseconds: `2026-11-28T10:00:00.123Z`.
public enum ISO8601 {
    public static func string(from date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    /// Reads ISO-8601 with or without fractional seconds, with `Z` or an offset.
    public static func date(from text: String) -> Date? {
        (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text))
            ?? (try? Date.ISO8601FormatStyle().parse(text))
    }
}
