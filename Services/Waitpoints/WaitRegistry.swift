import Contracts
import Foundation
import Redis

/// The Redis registry of waiters: one set per channel, `ssw:{envId}:{friendlyId}:{io}`, of
/// waitpoint ids. Adding is one script (SADD, and a TTL that only ever grows, so a short waiter
/// never shortens a long one's life); draining is an atomic read-and-delete, so two drains never
/// both get a waiter.
///
/// PostgreSQL is the record of truth: `ssw:epoch` marks a registry filled from it; when Redis
/// lost its data the key is gone and the owner re-registers every pending waitpoint.
struct WaitRegistry: Sendable {
    let redis: RedisClient

    static let epochKey = "ssw:epoch"

    static func key(_ channel: ChannelAddress) -> String {
        "ssw:\(channel.environmentId):\(channel.friendlyId):\(channel.io.rawValue)"
    }

    /// ARGV[2] < 0 means "no expiry", which outranks any TTL.
    private static let add = RedisScript(
        """
        local existed = redis.call('EXISTS', KEYS[1])
        redis.call('SADD', KEYS[1], ARGV[1])
        local wanted = tonumber(ARGV[2])
        if wanted < 0 then
            redis.call('PERSIST', KEYS[1])
            return -1
        end
        local current = redis.call('PTTL', KEYS[1])
        if existed == 0 or (current >= 0 and wanted > current) then
            redis.call('PEXPIRE', KEYS[1], wanted)
        end
        return redis.call('PTTL', KEYS[1])
        """
    )

    /// Registers a waiter for `ttl` (nil: no expiry); returns the key's TTL afterwards in
    /// milliseconds, -1 for none.
    @discardableResult
    func add(_ waitpointId: String, on channel: ChannelAddress, ttl: Duration?) async throws -> Int {
        let milliseconds =
            ttl.map { max(1, $0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000) } ?? -1
        let reply = try await redis.evaluate(
            Self.add,
            keys: [Self.key(channel)],
            arguments: [waitpointId, String(milliseconds)]
        )
        return reply.integer ?? 0
    }

    /// Takes every waiter of the channel out of the registry, atomically, and tells in the same
    /// round trip whether the registry is filled (false after Redis lost its data).
    func drain(_ channel: ChannelAddress) async throws -> (waiters: [String], isFilled: Bool) {
        let key = Self.key(channel)
        let replies = try await redis.transaction([["EXISTS", Self.epochKey], ["SMEMBERS", key], ["DEL", key]])
        return (replies.dropFirst().first?.array?.compactMap(\.string) ?? [], replies.first?.integer == 1)
    }

    func remove(_ waitpointId: String, from channel: ChannelAddress) async throws {
        _ = try await redis.command("SREM", Self.key(channel), waitpointId)
    }

    /// Whether the registry holds what PostgreSQL has (false after Redis lost its data).
    func isFilled() async throws -> Bool {
        try await redis.command("EXISTS", Self.epochKey).integer == 1
    }

    func markFilled() async throws {
        _ = try await redis.command("SET", Self.epochKey, ISO8601.string(from: Date()))
    }
}
