/// A reply from Redis.
public enum RedisValue: Sendable, Equatable {
    case string(String)
    case integer(Int)
    case array([RedisValue])
    case status(String)
    case error(String)
    case null

    /// The value as text, for string and status replies.
    public var string: String? {
        switch self {
        case .string(let value), .status(let value): value
        default: nil
        }
    }

    /// The value as an integer, for integer replies and numeric strings.
    public var integer: Int? {
        switch self {
        case .integer(let value): value
        case .string(let value): Int(value)
        default: nil
        }
    }

    /// The elements of an array reply.
    public var array: [RedisValue]? {
        if case .array(let values) = self { return values }
        return nil
    }
}

/// A Lua script, run with `EVALSHA` and loaded on first use (and again after Redis lost it).
public struct RedisScript: Sendable, Hashable {
    public var source: String

    public init(_ source: String) { self.source = source }
}
