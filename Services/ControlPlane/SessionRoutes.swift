import ClickHouse
import Contracts
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import ServiceKit

/// `/api/v1/sessions…`: create, retrieve, update and close (SPEC §4).
///
/// Every route authenticates first, then reads and validates the body, then looks the session
/// up and authorizes against both of its ids — so a caller without access gets 403 whether or
/// not the session exists — and only then answers 404.
struct SessionRoutes: Sendable {
    let store: SessionStore
    let environments: EnvironmentStore
    let events: SessionEventRelay
    let tokenSettings: AccessTokenSettings
    let listing: SessionListing

    static let bodyLimit = 32 * 1024
    static let closeBodyLimit = 1024

    func add(to router: Router<APIRequestContext>, authenticator: any Authenticator) {
        let sessions = router.group("api/v1/sessions").add(middleware: AuthenticationMiddleware(authenticator))
        sessions.post(use: create)
        sessions.get(use: list)
        sessions.get("{session}", use: retrieve)
        sessions.patch("{session}", use: update)
        sessions.post("{session}/close", use: close)
    }

    @Sendable func create(_ request: Request, context: APIRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let fields = Fields(try await request.jsonObject(limit: Self.bodyLimit))
        let new = NewSession(
            type: try fields.requiredString("type", length: 1...64),
            externalId: try Self.externalId(fields),
            taskIdentifier: try fields.string("taskIdentifier", length: 1...128),
            tags: try fields.strings("tags", maxCount: 10, itemLength: 1...128) ?? [],
            metadata: try Self.metadata(fields),
            triggerConfig: try Self.object(fields, "triggerConfig"),
            expiresAt: try fields.date("expiresAt")
        )
        let superScopes = ["write:sessions", "write:all", "admin"]
        try principal.authorize(AccessRequirement(.write, .tasks, ids: [new.taskIdentifier], superScopes: superScopes))
        // A caller allowed only some tasks gets an existing session (and its token) only when it
        // belongs to one of them; otherwise an externalId would hand over another task's session.
        let tasks =
            principal.allows(AccessRequirement(.write, .tasks, ids: [], superScopes: superScopes))
            ? nil : principal.scopedIds(.write, .tasks)
        guard let (session, outcome) = try await store.create(new, in: principal, onlyTasks: tasks) else {
            throw APIError(.forbidden, "Unauthorized: this token does not grant write access")
        }
        let isNew = outcome == .created
        // A session the statement changed was open and unexpired by the database's clock.
        if outcome == .existing {
            switch session.status() {
            case .closed:
                throw APIError(.conflict, "Session is closed; use a different externalId to create a new session")
            case .expired:
                throw APIError(.conflict, "Session is expired; use a different externalId to create a new session")
            case .active: break
            }
        }
        if outcome != .existing { events.nudge() }
        guard let environment = try await environments.environment(id: principal.environmentId) else {
            throw APIError(.unauthorized, "Invalid API Key")
        }
        let token = try await AccessTokens.mint(
            environmentId: principal.environmentId,
            secretKey: environment.apiKey,
            scopes: ["read:sessions:\(session.friendlyId)", "write:sessions:\(session.friendlyId)"],
            settings: tokenSettings
        )
        return try .json(
            CreatedSession(session: session.item(), publicAccessToken: token, isCached: !isNew),
            status: isNew ? .created : .ok
        )
    }

    /// Lists sessions. A token with `read:tasks:{id}` scopes (and no wider read scope) sees the
    /// sessions of those tasks only.
    @Sendable func list(_ request: Request, context: APIRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        var filters = try SessionListing.filters(request)
        if let scopes = principal.scopes,
            !["read:sessions", "read:all", "admin", "read:tasks"].contains(where: scopes.containsBytes)
        {
            let tasks = principal.scopedIds(.read, .tasks)
            guard !tasks.isEmpty else {
                throw APIError(.forbidden, "Unauthorized: this token does not grant read access to sessions")
            }
            let requested = filters.taskIdentifiers
            filters.taskIdentifiers = requested.isEmpty ? tasks : requested.filter(tasks.containsBytes)
            if filters.taskIdentifiers.isEmpty {
                return try .json(SessionPage(data: [], pagination: .init()))
            }
        }
        do {
            return try .json(try await listing.list(filters, in: principal))
        } catch let error as ClickHouseError {
            context.logger.error("Listing sessions failed.", metadata: ["error": "\(error)"])
            throw APIError(.unavailable, "Listing sessions is unavailable; try again")
        }
    }

    @Sendable func retrieve(_ request: Request, context: APIRequestContext) async throws -> Response {
        let session = try await authorizedSession(context, .read, superScopes: ["read:all", "admin"])
        return try .json(session.item())
    }

    /// The session's fields that a PATCH cannot change (SPEC §4: it sets tags, metadata and
    /// externalId; expiresAt is write-once, set at create).
    static let fixedFields = [
        "id", "type", "taskIdentifier", "triggerConfig", "expiresAt", "closedAt", "closedReason", "status",
        "createdAt", "updatedAt",
    ]

    @Sendable func update(_ request: Request, context: APIRequestContext) async throws -> Response {
        _ = try context.requirePrincipal()
        let fields = Fields(try await request.jsonObject(limit: Self.bodyLimit))
        // A field of the session that PATCH does not change is refused, not silently kept.
        if let fixed = Self.fixedFields.first(where: fields.contains) {
            throw APIError(
                .badRequest,
                "Invalid request body: \(fixed) cannot be changed; a PATCH sets tags, metadata and externalId"
            )
        }
        var changes = SessionChanges()
        if fields.contains("tags") {
            guard let tags = try fields.strings("tags", maxCount: 10, itemLength: 1...128) else {
                throw APIError(.badRequest, "Invalid request body: tags must be an array of strings")
            }
            changes.tags = tags
        }
        if fields.contains("metadata") { changes.metadata = .some(try Self.metadata(fields)) }
        if fields.contains("externalId") { changes.externalId = .some(try Self.externalId(fields)) }
        let session = try await authorizedSession(context, .admin, superScopes: ["admin:all", "admin"])
        // Nothing to change: no write, no event, the session as it is.
        guard !changes.isEmpty else {
            return try .json(session.item())
        }
        guard let (updated, previousExternalId) = try await store.update(session, with: changes) else {
            throw APIError(.notFound, "Session not found")
        }
        await events.changed(updated, previousExternalId: previousExternalId)
        return try .json(updated.item())
    }

    @Sendable func close(_ request: Request, context: APIRequestContext) async throws -> Response {
        _ = try context.requirePrincipal()
        // The body is optional. A request with neither Content-Length nor Transfer-Encoding has
        // none (RFC 9112 §6.3); proxies send a body-less POST that way.
        let hasBody =
            request.headers[.contentLength].flatMap(Int.init).map { $0 != 0 }
            ?? (request.headers[.transferEncoding] != nil)
        let fields = Fields(hasBody ? try await request.jsonObject(limit: Self.closeBodyLimit) : [:])
        let reason = try fields.string("reason", length: 0...256)
        let session = try await authorizedSession(context, .admin, superScopes: ["admin:all", "admin"])
        guard let (closed, didClose) = try await store.close(session, reason: reason) else {
            throw APIError(.notFound, "Session not found")
        }
        if didClose { await events.changed(closed) }
        return try .json(closed.item())
    }

    /// Looks the session of the path up, authorizes, then answers 404 when it does not exist.
    private func authorizedSession(
        _ context: APIRequestContext,
        _ action: AccessRequirement.Action,
        superScopes: [String]
    ) async throws -> SessionRecord {
        let principal = try context.requirePrincipal()
        let key = try context.pathId("session")
        let session = try await store.find(key, environmentId: principal.environmentId)
        try principal.authorize(
            AccessRequirement(
                action,
                .sessions,
                ids: [key, session?.friendlyId, session?.externalId],
                superScopes: ["\(action.rawValue):sessions"] + superScopes
            )
        )
        guard let session else { throw APIError(.notFound, "Session not found") }
        return session
    }

    /// `externalId`: trimmed, 1–256 characters, not starting with `session_`; nil when absent or null.
    private static func externalId(_ fields: Fields) throws -> String? {
        guard let externalId = try fields.string("externalId", length: 1...256, trim: true) else { return nil }
        guard !externalId.hasPrefix("session_") else {
            throw APIError(
                .badRequest,
                "Invalid request body: externalId must not start with session_ (reserved for session ids)"
            )
        }
        return externalId
    }

    /// `metadata`: a JSON object, or null.
    private static func metadata(_ fields: Fields) throws -> JSONValue? {
        try object(fields, "metadata")
    }

    private static func object(_ fields: Fields, _ name: String) throws -> JSONValue? {
        let value = try fields.objectOrNull(name)
        return value == .null ? nil : value
    }
}
