import Foundation

/// `auth.authenticate`: which environment a credential belongs to and what it may do.
public struct AuthenticateRequest: Codable, Sendable, Equatable {
    /// The bearer token: a secret key or a public access token (JWT).
    public var token: String

    public init(token: String) { self.token = token }
}

/// An authenticated caller.
public struct Principal: Codable, Sendable, Equatable {
    public var environmentId: String
    public var organizationId: String
    public var projectId: String
    public var environmentType: EnvironmentType
    /// Nil for a secret key (which may do everything in its environment); the JWT's scopes otherwise.
    public var scopes: [String]?
    /// When the credential stops being valid (a JWT's `exp`); nil for a secret key.
    public var expiresAt: Date?

    public init(
        environmentId: String,
        organizationId: String,
        projectId: String,
        environmentType: EnvironmentType,
        scopes: [String]?,
        expiresAt: Date? = nil
    ) {
        self.environmentId = environmentId
        self.organizationId = organizationId
        self.projectId = projectId
        self.environmentType = environmentType
        self.scopes = scopes
        self.expiresAt = expiresAt
    }

    public var isSecretKey: Bool { scopes == nil }
}

/// `sessions.resolve`: find a session of an environment by friendlyId or externalId.
public struct ResolveSessionRequest: Codable, Sendable, Equatable {
    public var environmentId: String
    /// A friendlyId (`session_…`) or an externalId.
    public var session: String

    public init(environmentId: String, session: String) {
        self.environmentId = environmentId
        self.session = session
    }
}

/// A session lifecycle event, published durably on JetStream.
public struct SessionEvent: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case created, updated, closed
    }

    public var kind: Kind
    public var session: SessionRecord
    /// On an `updated` event that changed the externalId: the name it had before, which caches
    /// must forget too.
    public var previousExternalId: String?

    public init(kind: Kind, session: SessionRecord, previousExternalId: String? = nil) {
        self.kind = kind
        self.session = session
        self.previousExternalId = previousExternalId
    }
}

/// NATS subjects and stream names shared by the services.
public enum Subjects {
    /// Request/reply: ``ResolveSessionRequest`` → ``SessionRecord``.
    public static let resolveSession = "sessions.resolve"
    /// Request/reply: ``AuthenticateRequest`` → ``Principal``.
    public static let authenticate = "auth.authenticate"
    /// The JetStream stream of session lifecycle events.
    public static let sessionEventsStream = "SESSION_EVENTS"
    /// `events.sessions.{environmentId}.{kind}`.
    public static func sessionEvent(environmentId: String, kind: SessionEvent.Kind) -> String {
        "events.sessions.\(environmentId).\(kind.rawValue)"
    }
    public static let allSessionEvents = "events.sessions.>"
    /// Core NATS, not stored: `session-changes.{environmentId}`, a ``SessionChange`` sent the
    /// moment a session is updated or closed, so caches drop it before the durable event comes.
    public static func sessionChange(environmentId: String) -> String { "session-changes.\(environmentId)" }
    public static let allSessionChanges = "session-changes.>"
}

/// The names (friendlyId and every externalId it had) under which a changed session may be
/// cached; whoever caches it forgets them.
public struct SessionChange: Codable, Sendable, Equatable {
    public var environmentId: String
    public var names: [String]

    public init(environmentId: String, names: [String]) {
        self.environmentId = environmentId
        self.names = names
    }
}

extension String {
    /// Whether the two are the same bytes. Swift's `==` (and `Set`, `Dictionary`, `contains`,
    /// `hasPrefix`) treats canonically equivalent text as equal — "é" as one scalar or as "e"
    /// and an accent — while PostgreSQL, NATS and S2 compare bytes, so two such externalIds are
    /// two sessions. Every check of an id or a scope compares with this.
    public func isSameBytes(as other: String) -> Bool { utf8.elementsEqual(other.utf8) }
}

extension Sequence<String> {
    /// Whether one of these is `value`, byte for byte (``Swift/String/isSameBytes(as:)``).
    public func containsBytes(_ value: String) -> Bool { contains { $0.isSameBytes(as: value) } }
}
