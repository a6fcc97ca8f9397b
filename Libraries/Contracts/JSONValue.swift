import Foundation

/// Any JSON value, kept as sent (session metadata, trigger configuration).
public enum JSONValue: Codable, Sendable, Equatable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    /// A number a `Double` would change (more digits than it holds): kept exactly as written.
    case decimal(Decimal)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        // Most common first: every failed attempt costs a thrown error.
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([String: JSONValue].self) {
            self = .object(value)
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let exact = try? container.decode(Decimal.self) {
            self = Self.number(exact)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else {
            self = .array(try container.decode([JSONValue].self))
        }
    }

    /// A Double when it is the same number (exact to 38 digits), compared in decimal text: on
    /// Linux, `Decimal(Double)` and `NSDecimalNumber.doubleValue` are off in the last digits
    /// (1796024125239 became a `.decimal`, refused where a whole number was expected).
    static func number(_ exact: Decimal) -> JSONValue {
        guard let double = Double(exact.description), Decimal(string: double.description) == exact else {
            return .decimal(exact)
        }
        return .number(double)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            if value.rounded() == value, abs(value) < 1e15 {
                try container.encode(Int64(value))
            } else {
                try container.encode(value)
            }
        case .decimal(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

extension JSONValue: ExpressibleByArrayLiteral {
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
}

extension JSONValue {
    /// How deeply arrays and objects nest inside: 0 for a string, number, bool or null; 1 for an
    /// array or object of those.
    public var depth: Int {
        switch self {
        case .array(let items): 1 + (items.lazy.map(\.depth).max() ?? 0)
        case .object(let members): 1 + (members.values.lazy.map(\.depth).max() ?? 0)
        case .null, .bool, .number, .decimal, .string: 0
        }
    }

    /// Where a string or key inside holds U+0000, which PostgreSQL text cannot store, as a
    /// path below `path` (`tags[1]`, `metadata.note`); nil when none does.
    public func pathToNUL(from path: String = "") -> String? {
        switch self {
        case .string(let text):
            return text.utf8.contains(0) ? path : nil
        case .array(let items):
            for (index, item) in items.enumerated() {
                if let found = item.pathToNUL(from: "\(path)[\(index)]") { return found }
            }
            return nil
        case .object(let members):
            for (key, value) in members {
                let name = key.replacingOccurrences(of: "\u{0}", with: "\\u0000")
                let member = path.isEmpty ? name : "\(path).\(name)"
                if key.utf8.contains(0) { return member }
                if let found = value.pathToNUL(from: member) { return found }
            }
            return nil
        case .null, .bool, .number, .decimal:
            return nil
        }
    }
}

/// Reading JSON text without decoding it.
public enum RawJSON {
    /// The text of the value of a top-level member of a JSON object, exactly as written (the
    /// last one, if the name repeats); nil when `json` is not an object or has no such member.
    public static func member(_ name: String, of json: String) -> String? {
        let bytes = Array(json.utf8)
        var index = 0
        let space: Set<UInt8> = [0x20, 0x09, 0x0A, 0x0D]
        func skipSpace() { while index < bytes.count, space.contains(bytes[index]) { index += 1 } }
        func skipString() -> Bool {
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return false }
            index += 1
            while index < bytes.count {
                switch bytes[index] {
                case UInt8(ascii: "\\"): index += 2
                case UInt8(ascii: "\""):
                    index += 1
                    return true
                default: index += 1
                }
            }
            return false
        }
        func skipValue() -> Bool {
            guard index < bytes.count else { return false }
            switch bytes[index] {
            case UInt8(ascii: "\""): return skipString()
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                var depth = 0
                while index < bytes.count {
                    switch bytes[index] {
                    case UInt8(ascii: "\""):
                        guard skipString() else { return false }
                        continue
                    case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                    case UInt8(ascii: "}"), UInt8(ascii: "]"):
                        depth -= 1
                        if depth == 0 {
                            index += 1
                            return true
                        }
                    default: break
                    }
                    index += 1
                }
                return false
            default:
                let ends: Set<UInt8> = [UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]")]
                while index < bytes.count, !ends.contains(bytes[index]), !space.contains(bytes[index]) { index += 1 }
                return true
            }
        }
        skipSpace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "{") else { return nil }
        index += 1
        var found: String?
        while true {
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") { return found }
            let keyStart = index
            guard skipString() else { return nil }
            let key = try? JSONDecoder().decode(String.self, from: Data(bytes[keyStart..<index]))
            skipSpace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
            index += 1
            skipSpace()
            let valueStart = index
            guard skipValue() else { return nil }
            if key == name { found = String(decoding: bytes[valueStart..<index], as: UTF8.self) }
            skipSpace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ",") else { return found }
            index += 1
        }
    }
}
