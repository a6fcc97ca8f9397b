import Contracts
import Foundation
import Postgres
import ServiceKit
import Synchronization

/// An environment with its secret key, as the control plane needs it to authenticate.
struct EnvironmentRecord: Sendable, Equatable {
    var id: String
    var organizationId: String
    var projectId: String
    var type: EnvironmentType
    var apiKey: String

    /// Who a credential of this environment is: its secret key (no scopes) or a token's scopes.
    func principal(scopes: [String]? = nil, expiresAt: Date? = nil) -> Principal {
        Principal(
            environmentId: id,
            organizationId: organizationId,
            projectId: projectId,
            environmentType: type,
            scopes: scopes,
            expiresAt: expiresAt
        )
    }
}

/// Reads environments, remembering them briefly: every authenticated request needs one.
final class EnvironmentStore: Sendable {
    private struct Cached {
        var environment: EnvironmentRecord?
        var until: Date
    }

    private let database: PostgresClient
    private let cacheLifetime: TimeInterval
    private let byID = Mutex<[String: Cached]>([:])
    /// Secret key → environment; only hits (the key matched) are remembered.
    private let byKey = Mutex<[String: Cached]>([:])

    init(database: PostgresClient, cacheLifetime: TimeInterval = 30) {
        self.database = database
        self.cacheLifetime = cacheLifetime
    }

    /// The environment whose secret key is `key`. Looked up by the key's hash, then compared in
    /// constant time, so response times say nothing about how much of a guess was right. A key
    /// that matched is remembered for `cacheLifetime`, so a revoked key stops working within it.
    func environment(forKey key: String) async throws -> EnvironmentRecord? {
        let now = Date()
        if let cached = byKey.withLock({ $0[key] }), cached.until > now { return cached.environment }
        let rows = try await database.query(
            """
            SELECT id, organization_id, project_id, type, api_key FROM runtime_environments
            WHERE api_key_hash = encode(sha256(convert_to(\(key), 'UTF8')), 'hex')
            """
        )
        guard let environment = try rows.first.map(Self.decode), constantTimeEqual(environment.apiKey, key) else {
            return nil
        }
        remember(environment, under: key, in: byKey, now: now)
        return environment
    }

    /// The environment with this id (cached for `cacheLifetime`).
    func environment(id: String) async throws -> EnvironmentRecord? {
        let now = Date()
        if let cached = byID.withLock({ $0[id] }), cached.until > now { return cached.environment }
        let rows = try await database.query(
            "SELECT id, organization_id, project_id, type, api_key FROM runtime_environments WHERE id = \(id)"
        )
        let environment = try rows.first.map(Self.decode)
        remember(environment, under: id, in: byID, now: now)
        return environment
    }

    private func remember(
        _ environment: EnvironmentRecord?,
        under key: String,
        in cache: borrowing Mutex<[String: Cached]>,
        now: Date
    ) {
        cache.withLock { cache in
            if cache.count > 10_000 { cache.removeAll() }
            cache[key] = Cached(environment: environment, until: now.addingTimeInterval(cacheLifetime))
        }
    }

    private static func decode(_ row: PostgresRow) throws -> EnvironmentRecord {
        EnvironmentRecord(
            id: try row.decode("id"),
            organizationId: try row.decode("organization_id"),
            projectId: try row.decode("project_id"),
            type: EnvironmentType(rawValue: try row.decode("type")) ?? .development,
            apiKey: try row.decode("api_key")
        )
    }
}

/// Compares two strings in time that depends only on their lengths.
func constantTimeEqual(_ left: String, _ right: String) -> Bool {
    let left = Array(left.utf8)
    let right = Array(right.utf8)
    guard left.count == right.count else { return false }
    return zip(left, right).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
}

/// Authenticates secret keys and public access tokens against the control plane's own tables.
struct ControlPlaneAuthenticator: Authenticator {
    let environments: EnvironmentStore
    let settings: AccessTokenSettings

    func authenticate(token: String) async throws -> Principal {
        if token.hasPrefix("pk_") {
            throw APIError(
                .unauthorized,
                "Public API keys are not supported; use a secret key or a Public Access Token"
            )
        }
        if let environmentId = AccessTokens.unverifiedEnvironmentId(token) {
            guard let environment = try await environments.environment(id: environmentId) else {
                throw APIError(.unauthorized, "Invalid Public Access Token")
            }
            let claims = try await AccessTokens.verify(token, secretKey: environment.apiKey, settings: settings)
            // Kept within the dates every service reads back (a token may say year 3e12).
            return environment.principal(
                scopes: claims.scopes,
                expiresAt: min(claims.expiresAt, Date.supportedRange.upperBound)
            )
        }
        guard let environment = try await environments.environment(forKey: token) else {
            throw APIError(.unauthorized, "Invalid API Key")
        }
        return environment.principal()
    }
}
