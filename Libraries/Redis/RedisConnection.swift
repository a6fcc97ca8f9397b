internal import CHiredis
import ConnectionPool
import Foundation

/// One hiredis connection (`redisContext`).
///
/// `@unchecked Sendable`: a `redisContext` must not be used from two threads at once; the pool
/// leases it to one task, which runs each call on the pool's threads, one at a time.
final class RedisHandle: PooledConnection, @unchecked Sendable {
    private let context: UnsafeMutablePointer<redisContext>

    /// Connects (blocking), sets the command timeout, authenticates (`AUTH [user] password`,
    /// when the URL has a password) and selects the database.
    init(host: String, port: Int, user: String?, password: String?, database: Int, timeout: Duration) throws {
        let interval = timeval(
            tv_sec: Int(timeout.components.seconds),
            tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000)
        )
        guard let context = redisConnectWithTimeout(host, Int32(port), interval) else {
            throw RedisError(.connectionFailed, message: "hiredis could not allocate a connection")
        }
        self.context = context
        if context.pointee.err != 0 { throw Self.error(context) }
        _ = redisSetTimeout(context, interval)
        if let password {
            // Not the reply itself: it may repeat what was sent.
            if case .error = try command(["AUTH"] + (user.map { [$0] } ?? []) + [password]) {
                throw RedisError(.connectionFailed, message: "Redis refused the user or password of the Redis URL")
            }
        }
        if database != 0, case .error(let message) = try command(["SELECT", String(database)]) {
            throw RedisError(.connectionFailed, message: "Redis refused database \(database): \(message)")
        }
    }

    deinit { redisFree(context) }

    var isBroken: Bool { context.pointee.err != 0 }

    /// Sends one command and reads its reply (blocking). Error replies come back as `.error`.
    func command(_ arguments: [String]) throws -> RedisValue {
        try withArgv(arguments) { count, argv, lengths in
            guard let reply = redisCommandArgv(context, count, argv, lengths) else { throw Self.error(context) }
            defer { freeReplyObject(reply) }
            return Self.value(of: reply.assumingMemoryBound(to: redisReply.self))
        }
    }

    /// Sends several commands in one write, then reads one reply per command (blocking).
    func pipeline(_ commands: [[String]]) throws -> [RedisValue] {
        for arguments in commands {
            let status = withArgv(arguments) { count, argv, lengths in
                redisAppendCommandArgv(context, count, argv, lengths)
            }
            if status != REDIS_OK { throw Self.error(context) }
        }
        return try commands.map { _ in
            var reply: UnsafeMutableRawPointer?
            guard redisGetReply(context, &reply) == REDIS_OK, let reply else { throw Self.error(context) }
            defer { freeReplyObject(reply) }
            return Self.value(of: reply.assumingMemoryBound(to: redisReply.self))
        }
    }

    private func withArgv<Result>(
        _ arguments: [String],
        _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) throws -> Result
    ) rethrows -> Result {
        let buffers = arguments.map { Array($0.utf8CString) }
        let lengths = arguments.map { $0.utf8.count }
        let pointers = buffers.map { buffer in
            let copy = UnsafeMutablePointer<CChar>.allocate(capacity: buffer.count)
            copy.initialize(from: buffer, count: buffer.count)
            return copy
        }
        defer { pointers.forEach { $0.deallocate() } }
        var argv = pointers.map { UnsafePointer<CChar>?(UnsafePointer($0)) }
        return try argv.withUnsafeMutableBufferPointer { argvBuffer in
            try lengths.withUnsafeBufferPointer { lengthBuffer in
                try body(Int32(arguments.count), argvBuffer.baseAddress!, lengthBuffer.baseAddress!)
            }
        }
    }

    private static func value(of reply: UnsafeMutablePointer<redisReply>) -> RedisValue {
        let node = reply.pointee
        func text() -> String {
            guard let pointer = node.str else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: pointer, count: node.len), as: UTF8.self)
        }
        switch node.type {
        case REDIS_REPLY_STRING: return .string(text())
        case REDIS_REPLY_STATUS: return .status(text())
        case REDIS_REPLY_ERROR: return .error(text())
        case REDIS_REPLY_INTEGER: return .integer(Int(node.integer))
        case REDIS_REPLY_ARRAY:
            return .array((0..<node.elements).map { value(of: node.element[$0]!) })
        default: return .null
        }
    }

    private static func error(_ context: UnsafeMutablePointer<redisContext>) -> RedisError {
        let message = withUnsafeBytes(of: context.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        return RedisError(.connectionFailed, hiredisCode: context.pointee.err, message: message)
    }
}
