import Contracts
import Foundation
import Redis

/// The Redis registry of waiters: one sorted set per channel, `ssw2:{envId}:{friendlyId}:{io}`,
/// of waitpoint ids scored by the sequence number each waits for. Adding is one script (ZADD,
/// and a TTL that only ever grows, so a short waiter never shortens a long one's life);
/// draining takes out, atomically, the waiters a record is for — those waiting for it or an
/// earlier one — so two drains never both get a waiter, and a waiter for a later record is
/// left alone by every append before it.
///
/// PostgreSQL is the record of truth: `ssw2:epoch` marks a registry filled from it; when Redis
/// lost its data the key is gone and the owner re-registers every pending waitpoint. (Version 1
/// kept plain sets under `ssw:`; its epoch is not this one, so the first drain or sweep after an
/// upgrade registers every pending waitpoint here.)
struct WaitRegistry: Sendable {
    let redis: RedisClient

    static let epochKey = "ssw2:epoch"

    static func key(_ channel: ChannelAddress) -> String {
        "ssw2:\(channel.environmentId):\(channel.friendlyId):\(channel.io.rawValue)"
    }

    /// ARGV: id, score, TTL in ms; a TTL < 0 means "no expiry", which outranks any TTL.
    private static let add = RedisScript(
        """
        local existed = redis.call('EXISTS', KEYS[1])
        redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
        local wanted = tonumber(ARGV[3])
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

    /// A registration lives until this long after its waitpoint's timeout (without a timeout,
    /// with no expiry).
    static let slackMilliseconds: Int64 = 60_000

    /// Registers a waiter until a minute after its timeout (without one, with no expiry);
    /// returns the key's TTL afterwards in milliseconds, -1 for none.
    @discardableResult
    func add(_ waitpoint: Waitpoint) async throws -> Int {
        let milliseconds =
            waitpoint.item.timeoutAt.map {
                max(1, Int64($0.timeIntervalSinceNow.rounded(.up))) * 1000 + Self.slackMilliseconds
            }
            ?? -1
        let reply = try await redis.evaluate(
            Self.add,
            keys: [Self.key(waitpoint.channel)],
            arguments: [waitpoint.id, String(waitpoint.fromSeqNum), String(milliseconds)]
        )
        return reply.integer ?? 0
    }

    /// Takes the channel's waiters for record `seqNum` or an earlier one out of the registry,
    /// atomically: how many there were, and whether the registry is filled (false after Redis
    /// lost its data), in one round trip.
    func drain(_ channel: ChannelAddress, upTo seqNum: UInt64) async throws -> (waiters: Int, isFilled: Bool) {
        let replies = try await redis.transaction([
            ["EXISTS", Self.epochKey], ["ZREMRANGEBYSCORE", Self.key(channel), "-inf", String(seqNum)],
        ])
        // An error in the transaction (say, WRONGTYPE) must not read as "no waiters".
        guard let taken = replies.dropFirst().first?.integer else {
            throw RedisError(
                .unexpectedReply,
                message: "ZREMRANGEBYSCORE answered \(replies.dropFirst().first.map { "\($0)" } ?? "nothing")"
            )
        }
        return (taken, replies.first?.integer == 1)
    }

    func remove(_ waitpointId: String, from channel: ChannelAddress) async throws {
        _ = try await redis.command("ZREM", Self.key(channel), waitpointId)
    }

    /// Whether the registry holds what PostgreSQL has (false after Redis lost its data).
    func isFilled() async throws -> Bool {
        try await redis.command("EXISTS", Self.epochKey).integer == 1
    }

    func markFilled() async throws {
        _ = try await redis.command("SET", Self.epochKey, ISO8601.string(from: Date()))
    }
}
