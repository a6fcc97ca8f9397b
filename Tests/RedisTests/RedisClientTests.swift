import Foundation
import Redis
import TestSupport
import Testing

func makeRedis(poolSize: Int = 4) throws -> RedisClient {
    try RedisClient(configuration: .init(url: try TestServers.redisURL, poolSize: poolSize))
}

@Suite(.timeLimit(.minutes(1))) struct RedisClientTests {
    @Test func commandsAreBinarySafeArgv() async throws {
        let redis = try makeRedis()
        let key = TestServers.uniqueName("key")
        let value = "spaces and \"quotes\" and\r\nnewlines and ünïcödé"
        #expect(try await redis.command("SET", key, value) == .status("OK"))
        #expect(try await redis.command("GET", key).string == value)
        #expect(try await redis.command("GET", key + "-missing") == .null)
        #expect(try await redis.command("DEL", key).integer == 1)
        await redis.close()
    }

    /// A Redis URL's user and password are sent (`AUTH`); a wrong one fails the connection with
    /// a message that does not repeat it (it used to be dropped: every command then failed).
    @Test func theURLsUserAndPasswordAuthenticate() async throws {
        let admin = try makeRedis(poolSize: 1)
        let user = TestServers.uniqueName("user")
        try await admin.command("ACL", "SETUSER", user, "on", ">s3cret:pw", "~*", "+@all")
        let address = try TestServers.redisURL.replacingOccurrences(of: "redis://", with: "")
        let authenticated = try RedisClient(
            configuration: .init(url: "redis://\(user):s3cret%3Apw@\(address)/2", poolSize: 1)
        )
        #expect(try await authenticated.command("ACL", "WHOAMI").string == user)
        await authenticated.close()
        let refused = try RedisClient(configuration: .init(url: "redis://\(user):wrong@\(address)", poolSize: 1))
        await #expect(throws: RedisError.self) {
            do {
                try await refused.command("PING")
            } catch let error as RedisError {
                #expect(error.code == .connectionFailed && !"\(error)".contains("wrong"), "\(error)")
                throw error
            }
        }
        await refused.close()
        #expect(throws: RedisError.self, "a user without a password is a mistake, said at once") {
            try RedisClient(configuration: .init(url: "redis://\(user)@\(address)", poolSize: 1))
        }
        try await admin.command("ACL", "DELUSER", user)
        await admin.close()
    }

    @Test func errorRepliesThrowServerErrors() async throws {
        let redis = try makeRedis()
        let key = TestServers.uniqueName("set")
        try await redis.command("SADD", key, "a")
        await #expect(throws: RedisError.self) {
            do {
                try await redis.command("GET", key)
            } catch let error as RedisError {
                #expect(error.code == .serverError)
                #expect(error.message.hasPrefix("WRONGTYPE"))
                #expect(!error.isRetriable)
                throw error
            }
        }
        try await redis.command("DEL", key)
        await redis.close()
    }

    @Test func scriptsRunByHashAndReloadAfterAFlush() async throws {
        let redis = try makeRedis()
        let key = TestServers.uniqueName("waiters")
        // Add a member and let the TTL only grow.
        let addWithGrowingTTL = RedisScript(
            """
            redis.call('SADD', KEYS[1], ARGV[1])
            local ttl = redis.call('TTL', KEYS[1])
            if ttl < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
            return redis.call('SCARD', KEYS[1])
            """
        )
        #expect(try await redis.evaluate(addWithGrowingTTL, keys: [key], arguments: ["w1", "600"]).integer == 1)
        try await redis.command("SCRIPT", "FLUSH")
        #expect(try await redis.evaluate(addWithGrowingTTL, keys: [key], arguments: ["w2", "10"]).integer == 2)
        let ttl = try #require(try await redis.command("TTL", key).integer)
        #expect(ttl > 500, "a shorter TTL must not shorten the key's life")
        try await redis.command("DEL", key)
        await redis.close()
    }

    @Test func transactionsRunAtomicallyAndReportEachReply() async throws {
        let redis = try makeRedis()
        let key = TestServers.uniqueName("drain")
        try await redis.command("SADD", key, "a", "b")
        let replies = try await redis.transaction([["SMEMBERS", key], ["DEL", key], ["INCR", key + "-n"]])
        #expect(Set(replies[0].array?.compactMap(\.string) ?? []) == ["a", "b"])
        #expect(replies[1] == .integer(1))
        #expect(replies[2] == .integer(1))
        #expect(try await redis.command("EXISTS", key).integer == 0)
        await #expect(throws: RedisError.self) {
            do {
                _ = try await redis.transaction([["SET", key], ["INCR", key + "-n"]])
            } catch let error as RedisError {
                #expect(error.code == .transactionAborted)
                throw error
            }
        }
        // A queued command that fails at run time is reported in its place.
        try await redis.command("SADD", key, "x")
        let mixed = try await redis.transaction([["INCR", key], ["INCR", key + "-n"]])
        #expect({ if case .error = mixed[0] { true } else { false } }())
        #expect(mixed[1] == .integer(2))
        try await redis.command("DEL", key, key + "-n")
        await redis.close()
    }

    @Test func unreachableServerIsARetriableConnectionError() async throws {
        let redis = try RedisClient(configuration: .init(url: "redis://127.0.0.1:\(try TestServers.freePort())"))
        await #expect(throws: RedisError.self) {
            do {
                try await redis.ping()
            } catch let error as RedisError {
                #expect(error.code == .connectionFailed)
                #expect(error.isRetriable)
                throw error
            }
        }
        await redis.close()
    }

    @Test func invalidURLIsRejected() {
        #expect(throws: RedisError.self) { try RedisClient(configuration: .init(url: "http://nope")) }
    }
}
