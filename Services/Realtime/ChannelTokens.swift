import Contracts
import Foundation
import JWTKit
import ServiceKit

/// Channel-scoped tokens for direct writers: `PUT …/:io` hands one out, the S2 REST subset
/// accepts it for that one channel only (append and check-tail, and read when its caller may
/// read), until it expires.
///
/// HS256 JWTs signed with `SESSIONS_REALTIME_TOKEN_SECRET`, which every realtime instance
/// shares so that a token from one works on all.
struct ChannelTokens: Sendable {
    struct Claims: JWTPayload {
        /// The environment id.
        var sub: SubjectClaim
        /// The stream name (``ChannelTokens/streamName(_:)``).
        var stream: String
        var exp: ExpirationClaim
        var aud: AudienceClaim
        /// Whether it reads the channel too; absent (a token minted before it existed): yes.
        var read: Bool?

        func verify(using algorithm: some JWTAlgorithm) async throws {
            try exp.verifyNotExpired()
            try aud.verifyIntendedAudience(includes: ChannelTokens.audience)
        }
    }

    static let audience = "sessions-channel"
    let keys: JWTKeyCollection
    let lifetime: Duration

    init(secret: String, lifetime: Duration) async {
        keys = await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        self.lifetime = lifetime
    }

    /// A token for `channel` that expires after ``lifetime``, or with the writer's own credential
    /// when that is sooner, and reads only when the writer may.
    func mint(for channel: ChannelAddress, writer: DirectWriter = .secretKey, now: Date = Date()) async throws -> String
    {
        let expiry = min(
            now.addingTimeInterval(Double(lifetime.components.seconds)),
            writer.expiresAt ?? .distantFuture
        )
        guard expiry.timeIntervalSince1970.rounded(.down) > now.timeIntervalSince1970 else {
            throw APIError(.unauthorized, "The access token expires too soon to give a channel token; use a fresh one")
        }
        return try await keys.sign(
            Claims(
                sub: .init(value: channel.environmentId),
                stream: Self.streamName(channel),
                exp: .init(value: Date(timeIntervalSince1970: expiry.timeIntervalSince1970.rounded(.down))),
                aud: .init(value: [Self.audience]),
                read: writer.canRead
            )
        )
    }

    /// What a token grants on a stream.
    struct Grant: Sendable {
        var channel: ChannelAddress
        var canRead: Bool
    }

    /// What a token grants on `streamName`: nil when it is not a valid, unexpired token of ours;
    /// `.some(nil)` when it is one but for another stream.
    func grant(token: String, streamName: String) async -> Grant?? {
        guard let claims = try? await keys.verify(token, as: Claims.self) else { return nil }
        guard claims.stream.isSameBytes(as: streamName),
            let channel = Self.channel(streamName: streamName, environmentId: claims.sub.value)
        else { return .some(nil) }
        return .some(Grant(channel: channel, canRead: claims.read ?? true))
    }

    /// `sessions/{friendlyId}/{io}`: a channel's name in the S2 REST subset.
    static func streamName(_ channel: ChannelAddress) -> String {
        "sessions/\(channel.friendlyId)/\(channel.io.rawValue)"
    }

    static func channel(streamName: String, environmentId: String) -> ChannelAddress? {
        let parts = streamName.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "sessions", parts[1].hasPrefix("session_"),
            let io = ChannelIO(rawValue: String(parts[2]))
        else { return nil }
        return ChannelAddress(environmentId: environmentId, friendlyId: String(parts[1]), io: io)
    }
}
