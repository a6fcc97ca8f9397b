import Contracts
import Foundation
import JWTKit
import Synchronization

/// Who issues public access tokens and for whom; defaults match Trigger.dev's SDK so its tokens verify.
public struct AccessTokenSettings: Sendable {
    public var issuer: String
    public var audience: String

    public init(issuer: String = "https://id.trigger.dev", audience: String = "https://api.trigger.dev") {
        self.issuer = issuer
        self.audience = audience
    }
}

/// The claims of a public access token (HS256 JWT signed with the environment's secret key).
public struct AccessTokenClaims: JWTPayload, Equatable {
    /// The environment id.
    public var sub: SubjectClaim
    public var pub: Bool
    public var scopes: [String]
    public var exp: ExpirationClaim
    public var iat: IssuedAtClaim
    public var iss: IssuerClaim?
    public var aud: AudienceClaim?
    /// Not sent by tokens minted here; honoured when another issuer sets it.
    public var nbf: NotBeforeClaim?

    public init(
        environmentId: String,
        scopes: [String],
        expiresAt: Date,
        issuedAt: Date = Date(),
        issuer: String?,
        audience: String?
    ) {
        sub = .init(value: environmentId)
        pub = true
        self.scopes = scopes
        exp = .init(value: expiresAt)
        iat = .init(value: issuedAt)
        iss = issuer.map { .init(value: $0) }
        aud = audience.map { .init(value: [$0]) }
    }

    /// When the token expires.
    public var expiresAt: Date { exp.value }

    public func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
    }
}

/// Mints and verifies public access tokens.
public enum AccessTokens {
    /// HS256 needs a key at least as long as its hash (jwt-kit stops the process otherwise).
    public static let minimumKeyBytes = 32

    /// A token for `environmentId` with `scopes`, valid for `lifetime`.
    ///
    /// - Throws: ``APIError`` 400 when `secretKey` is shorter than ``minimumKeyBytes``.
    public static func mint(
        environmentId: String,
        secretKey: String,
        scopes: [String],
        lifetime: Duration = .seconds(3600),
        settings: AccessTokenSettings,
        now: Date = Date()
    ) async throws -> String {
        guard secretKey.utf8.count >= minimumKeyBytes else {
            throw APIError(.badRequest, "A secret key is at least \(minimumKeyBytes) bytes long")
        }
        // Whole seconds: NumericDate may carry fractions, but common JWT libraries expect integers.
        let now = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        let claims = AccessTokenClaims(
            environmentId: environmentId,
            scopes: scopes,
            expiresAt: now.addingTimeInterval(Double(lifetime.components.seconds)),
            issuedAt: now,
            issuer: settings.issuer,
            audience: settings.audience
        )
        return try await keys(secretKey).sign(claims)
    }

    /// The environment a token claims to be for, read without verifying it; nil when the token
    /// is not a public access token (three parts, a JSON payload with `pub: true`).
    public static func unverifiedEnvironmentId(_ token: String) -> String? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let payload = base64URLDecode(parts[1]),
            let claims = try? JSONDecoder().decode(UnverifiedClaims.self, from: payload), claims.pub == true
        else { return nil }
        return claims.sub
    }

    /// Verifies the signature (HS256 only), expiry, issuer and audience.
    ///
    /// - Throws: ``APIError`` 401 naming what is wrong.
    public static func verify(
        _ token: String,
        secretKey: String,
        settings: AccessTokenSettings
    ) async throws
        -> AccessTokenClaims
    {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerData = base64URLDecode(parts[0]),
            let header = try? JSONDecoder().decode(UnverifiedHeader.self, from: headerData)
        else { throw APIError(.unauthorized, "Invalid Public Access Token") }
        guard header.alg == "HS256" else {
            throw APIError(.unauthorized, "Invalid Public Access Token: only HS256 is accepted")
        }
        // RFC 7515 §4.1.11: extensions named critical must be understood; none are here.
        guard header.crit == nil else {
            throw APIError(.unauthorized, "Invalid Public Access Token: unsupported critical header")
        }
        guard secretKey.utf8.count >= minimumKeyBytes else {
            throw APIError(.unauthorized, "Invalid Public Access Token")
        }
        let claims: AccessTokenClaims
        do {
            claims = try await keys(secretKey).verify(token, as: AccessTokenClaims.self)
        } catch let error as JWTError where error.errorType == .claimVerificationFailure {
            throw APIError(.unauthorized, "Public Access Token has expired")
        } catch {
            throw APIError(.unauthorized, "Invalid Public Access Token")
        }
        if let notBefore = claims.nbf?.value, notBefore > Date() {
            throw APIError(.unauthorized, "Public Access Token is not valid yet")
        }
        guard claims.iss?.value == settings.issuer else {
            throw APIError(.unauthorized, "Invalid Public Access Token: wrong issuer")
        }
        guard claims.aud?.value.contains(settings.audience) == true else {
            throw APIError(.unauthorized, "Invalid Public Access Token: wrong audience")
        }
        guard claims.pub else { throw APIError(.unauthorized, "Invalid Public Access Token") }
        return claims
    }

    /// One key collection per secret key: building one is costly, and every request verifies or
    /// signs with one of a few environment keys.
    private static func keys(_ secretKey: String) async -> JWTKeyCollection {
        if let keys = keyCache.withLock({ $0[secretKey] }) { return keys }
        let keys = await JWTKeyCollection().add(hmac: HMACKey(from: secretKey), digestAlgorithm: .sha256)
        keyCache.withLock { cache in
            if cache.count > 1_000 { cache.removeAll() }
            cache[secretKey] = keys
        }
        return keys
    }

    private static let keyCache = Mutex<[String: JWTKeyCollection]>([:])

    private struct UnverifiedHeader: Decodable {
        var alg: String
        var crit: JSONValue?
    }

    private struct UnverifiedClaims: Decodable {
        var sub: String?
        var pub: Bool?
    }

    private static func base64URLDecode(_ text: Substring) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64)
    }
}
