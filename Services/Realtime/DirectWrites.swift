import Contracts
import Foundation
import HTTPClient
import Nats
import ServiceKit
import Synchronization

/// What `PUT …/:io` hands a direct writer: a token for the one channel and where to write.
struct DirectWriteCredentials: Sendable, Equatable {
    var token: String
    var streamName: String
    var endpoint: String
}

/// Who asks `PUT …/:io` for direct-write credentials.
struct DirectWriter: Sendable {
    /// When the caller's own credential expires (nil: a secret key, which does not).
    var expiresAt: Date?
    /// Whether the caller may read the channel too (a `write:sessions:{id}` token alone may not).
    var canRead: Bool

    static let secretKey = DirectWriter(expiresAt: nil, canRead: true)
}

protocol DirectWriteIssuer: Sendable {
    func credentials(for channel: ChannelAddress, writer: DirectWriter) async throws -> DirectWriteCredentials
}

/// With the JetStream store: our own channel tokens, for the S2 subset realtime serves.
struct LocalDirectWrites: DirectWriteIssuer {
    let tokens: ChannelTokens
    /// `{public URL}/realtime/s2/v1`, which S2 clients use as given (S2's own is `…/v1` too).
    let endpoint: String

    /// The token grants no more than the caller has: it lasts no longer than the caller's own
    /// credential (a short-lived public access token does not buy a day of writing), and reads
    /// only when the caller may read.
    func credentials(for channel: ChannelAddress, writer: DirectWriter) async throws -> DirectWriteCredentials {
        DirectWriteCredentials(
            token: try await tokens.mint(for: channel, writer: writer),
            streamName: ChannelTokens.streamName(channel),
            endpoint: endpoint
        )
    }
}

/// With the S2 store: access tokens minted through S2's account API (`POST /access-tokens`),
/// scoped to the channel's stream in the basin (append, read, check-tail), cached for half
/// their lifetime, and revoked when their session closes (``revoke(session:)``): their ids
/// begin with the session's friendlyId. With `skipAccessTokens` (s2-lite, which has no token
/// API) the root token is handed out instead.
final class S2DirectWrites: DirectWriteIssuer {
    struct Settings: Sendable {
        /// The account plane, up to and including `/v1` (`https://aws.s2.dev/v1`).
        var accountEndpoint: String
        /// What writers use: the basin's data plane.
        var endpoint: String
        var basin: String
        var rootToken: String
        var skipAccessTokens: Bool
        var lifetime: Duration
    }

    let settings: Settings
    let http: HTTPClient
    let streamName: @Sendable (ChannelAddress) -> String
    private let cache = Mutex<[ChannelAddress: (token: String, freshUntil: Date)]>([:])

    init(settings: Settings, http: HTTPClient, streamName: @escaping @Sendable (ChannelAddress) -> String) {
        self.settings = settings
        self.http = http
        self.streamName = streamName
    }

    /// S2's tokens are shared by the channel's writers (cached), so they keep their lifetime and
    /// their ops (append, read, check-tail) whoever asks.
    func credentials(for channel: ChannelAddress, writer: DirectWriter) async throws -> DirectWriteCredentials {
        let name = streamName(channel)
        let token = settings.skipAccessTokens ? settings.rootToken : try await scopedToken(channel, streamName: name)
        return DirectWriteCredentials(token: token, streamName: name, endpoint: settings.endpoint)
    }

    private func scopedToken(_ channel: ChannelAddress, streamName: String) async throws -> String {
        let now = Date()
        if let cached = cache.withLock({ $0[channel] }), cached.freshUntil > now { return cached.token }
        let seconds = Double(settings.lifetime.components.seconds)
        let request = IssueRequest(
            id: Self.tokenIdPrefix(session: channel.friendlyId)
                + "\(channel.io.rawValue).\(Identifier.secret(length: 12))",
            expiresAt: ISO8601.string(from: now.addingTimeInterval(seconds)),
            scope: .init(
                basins: ["exact": settings.basin],
                streams: ["exact": streamName],
                ops: ["append", "read", "check-tail"]
            )
        )
        let issued = try await decodeAnswer(
            Issued.self,
            to: HTTPRequest(
                method: "POST",
                url: settings.accountEndpoint + "/access-tokens",
                headers: ["Authorization": "Bearer \(settings.rootToken)", "Content-Type": "application/json"],
                body: try JSONEncoder().encode(request),
                timeout: .seconds(10)
            ),
            expecting: [200, 201]
        )
        cache.withLock { cache in
            if cache.count >= 100_000 { cache.removeAll() }
            cache[channel] = (issued.accessToken, now.addingTimeInterval(seconds / 2))
        }
        return issued.accessToken
    }

    /// `sessions.{friendlyId}.`: how the ids of a session's tokens begin.
    static func tokenIdPrefix(session friendlyId: String) -> String { "sessions.\(friendlyId)." }

    /// Revokes every token issued for the session's channels, by any instance; returns how many.
    ///
    /// - Throws: ``StreamStoreError/unavailable(_:)`` when the account API does not answer or
    ///   refuses; what was revoked stays revoked, and a retry revokes the rest.
    @discardableResult
    func revoke(session friendlyId: String) async throws -> Int {
        guard !settings.skipAccessTokens else { return 0 }
        cache.withLock { cache in cache = cache.filter { $0.key.friendlyId != friendlyId } }
        let prefix = Self.tokenIdPrefix(session: friendlyId)
        var revoked = 0
        var after: String?
        while true {
            let page = try await decodeAnswer(
                TokenPage.self,
                to: HTTPRequest(
                    url: settings.accountEndpoint + "/access-tokens?prefix=\(prefix)&limit=1000"
                        + (after.map { "&start_after=\($0)" } ?? ""),
                    headers: ["Authorization": "Bearer \(settings.rootToken)"],
                    timeout: .seconds(10)
                ),
                expecting: [200]
            )
            for token in page.accessTokens {
                let response = try await answer(
                    to: HTTPRequest(
                        method: "DELETE",
                        url: settings.accountEndpoint + "/access-tokens/\(token.id)",
                        headers: ["Authorization": "Bearer \(settings.rootToken)"],
                        timeout: .seconds(10)
                    )
                )
                // 404: revoked meanwhile (by another instance, or it expired).
                guard [200, 204, 404].contains(response.status) else {
                    throw StreamStoreError.unavailable("S2 did not revoke an access token (\(response.status))")
                }
                revoked += 1
            }
            guard page.hasMore, let last = page.accessTokens.last else { return revoked }
            after = last.id
        }
    }

    private func answer(to request: HTTPRequest) async throws -> HTTPResponse {
        do {
            return try await http.execute(request)
        } catch {
            throw StreamStoreError.unavailable("S2's account API is unreachable: \(error)")
        }
    }

    private func decodeAnswer<Body: Decodable>(
        _ type: Body.Type,
        to request: HTTPRequest,
        expecting statuses: Set<Int>
    ) async throws -> Body {
        let response = try await answer(to: request)
        guard statuses.contains(response.status), let body = try? JSONDecoder().decode(type, from: response.body) else {
            throw StreamStoreError.unavailable("S2's account API answered \(response.status) to \(request.method)")
        }
        return body
    }

    private struct TokenPage: Decodable {
        struct Token: Decodable { var id: String }
        var accessTokens: [Token]
        var hasMore: Bool

        enum CodingKeys: String, CodingKey {
            case accessTokens = "access_tokens"
            case hasMore = "has_more"
        }
    }

    private struct IssueRequest: Encodable {
        struct Scope: Encodable {
            var basins: [String: String]
            var streams: [String: String]
            var ops: [String]
        }
        var id: String
        var expiresAt: String
        var scope: Scope

        enum CodingKeys: String, CodingKey {
            case id, scope
            case expiresAt = "expires_at"
        }
    }

    private struct Issued: Decodable {
        var accessToken: String
        enum CodingKeys: String, CodingKey { case accessToken = "access_token" }
    }
}

/// With a store other than JetStream, copies each appended record to the channel stream on
/// JetStream, where consumers such as waitpoints read appends durably.
struct AppendNotifier: Sendable {
    let jetStream: JetStream

    /// Publishes each record (deduplicated by channel and sequence number, so a retry after a
    /// failure publishes nothing twice).
    ///
    /// - Throws: ``StreamStoreError/unavailable(_:)`` when JetStream does not take them after
    ///   three tries; the caller answers 503 and the client retries (with its part id).
    func appended(_ channel: ChannelAddress, ack: AppendAck, bodies: [String]) async throws {
        for (offset, body) in bodies.enumerated() {
            let seqNum = ack.start + UInt64(offset)
            var attempt = 0
            while true {
                do {
                    _ = try await jetStream.publish(
                        channel.subject,
                        payload: Data(body.utf8),
                        headers: try ChannelRecord(seqNum: seqNum, timestamp: ack.timestamp, body: body).messageHeaders,
                        messageID: "\(channel.subject):\(seqNum)"
                    )
                    break
                } catch let error as NatsError {
                    attempt += 1
                    guard attempt < 3 else {
                        throw StreamStoreError.unavailable("append notification failed: \(error)")
                    }
                    try await Task.sleep(for: .milliseconds(50 * attempt))
                }
            }
        }
    }

    static func streamConfiguration() -> StreamConfiguration {
        StreamConfiguration(
            name: Subjects.channelStream,
            subjects: [Subjects.allChannels],
            maxAge: .seconds(7 * 86_400)
        )
    }
}
