import Foundation
import Redis

/// One leader per replication slot: a Redis key `replicator:leader:{slot}` holding the leader's
/// token with a TTL that the leader renews. Only the holder can renew or release it (scripts
/// compare the token), so a leader that lost the key — paused past its TTL, Redis flushed —
/// learns it at the next renewal and stops at once.
struct LeaderLock: Sendable {
    let redis: RedisClient
    let key: String
    let token = UUID().uuidString
    let ttl: Duration

    init(redis: RedisClient, slot: String, ttl: Duration) {
        self.redis = redis
        self.key = "replicator:leader:\(slot)"
        self.ttl = ttl
    }

    private var milliseconds: String {
        String(ttl.components.seconds * 1000 + ttl.components.attoseconds / 1_000_000_000_000_000)
    }

    /// True when this instance holds the lock now.
    func acquire() async throws -> Bool {
        try await redis.command("SET", key, token, "NX", "PX", milliseconds) == .status("OK")
    }

    private static let renewScript = RedisScript(
        """
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('PEXPIRE', KEYS[1], ARGV[2])
        end
        return 0
        """
    )

    private static let releaseScript = RedisScript(
        """
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('DEL', KEYS[1])
        end
        return 0
        """
    )

    /// Extends the lock; false when this instance no longer holds it.
    func renew() async throws -> Bool {
        try await redis.evaluate(Self.renewScript, keys: [key], arguments: [token, milliseconds]).integer == 1
    }

    func release() async {
        _ = try? await redis.evaluate(Self.releaseScript, keys: [key], arguments: [token])
    }
}
