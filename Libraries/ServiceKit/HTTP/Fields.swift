import Contracts
import Foundation

/// Typed, validated access to the members of a JSON request body. Every failure is a 400 whose
/// message names the field and the rule.
public struct Fields: Sendable {
    public let members: [String: JSONValue]

    public init(_ members: [String: JSONValue]) { self.members = members }

    /// Whether the body has the key (even with a null value).
    public func contains(_ name: String) -> Bool { members[name] != nil }

    /// A string of `length` characters (after trimming, when `trim`), or nil when absent/null.
    /// See ``checkLength(_:_:_:)``.
    public func string(_ name: String, length: ClosedRange<Int>, trim: Bool = false) throws -> String? {
        guard let value = members[name], value != .null else { return nil }
        guard case .string(var text) = value else {
            throw invalid(name, "must be a string")
        }
        if trim { text = text.trimmingCharacters(in: .whitespacesAndNewlines) }
        try checkLength(name, text, length)
        return text
    }

    /// `length` counts characters as a reader sees them; a character can be many bytes (a
    /// letter with any number of accents), so the UTF-8 bytes are also held to four per
    /// character allowed — ids are indexed, and an index entry has a size limit.
    private func checkLength(_ name: String, _ text: String, _ length: ClosedRange<Int>) throws {
        guard length.contains(text.count) else {
            throw invalid(name, "must be \(length.lowerBound)-\(length.upperBound) characters long")
        }
        guard text.utf8.count <= 4 * length.upperBound else {
            throw invalid(name, "must be at most \(4 * length.upperBound) bytes long in UTF-8")
        }
    }

    /// A required string.
    public func requiredString(_ name: String, length: ClosedRange<Int>, trim: Bool = false) throws -> String {
        guard let text = try string(name, length: length, trim: trim) else { throw invalid(name, "is required") }
        return text
    }

    /// An array of at most `maxCount` strings of `itemLength` characters, or nil when absent.
    public func strings(_ name: String, maxCount: Int, itemLength: ClosedRange<Int>) throws -> [String]? {
        guard let value = members[name], value != .null else { return nil }
        guard case .array(let items) = value else { throw invalid(name, "must be an array of strings") }
        guard items.count <= maxCount else { throw invalid(name, "must have at most \(maxCount) items") }
        return try items.enumerated().map { index, item in
            guard case .string(let text) = item else { throw invalid("\(name)[\(index)]", "must be a string") }
            try checkLength("\(name)[\(index)]", text, itemLength)
            return text
        }
    }

    /// A whole number in `range`, or nil when absent/null.
    public func integer(_ name: String, in range: ClosedRange<Int64>) throws -> Int64? {
        guard let value = members[name], value != .null else { return nil }
        guard case .number(let number) = value, number.rounded() == number, number >= Double(range.lowerBound),
            number <= Double(range.upperBound)
        else { throw invalid(name, "must be a whole number from \(range.lowerBound) to \(range.upperBound)") }
        return Int64(number)
    }

    /// A JSON object, `.null` when explicitly null, nil when absent.
    public func objectOrNull(_ name: String) throws -> JSONValue? {
        guard let value = members[name] else { return nil }
        switch value {
        case .null, .object: return value
        default: throw invalid(name, "must be a JSON object or null")
        }
    }

    /// A date given as an ISO-8601 string or as whole epoch milliseconds, or nil when absent/null.
    public func date(_ name: String) throws -> Date? {
        guard let value = members[name], value != .null else { return nil }
        let date: Date? =
            switch value {
            case .string(let text): ISO8601.date(from: text)
            case .number(let milliseconds) where milliseconds.isFinite && milliseconds.rounded() == milliseconds:
                Date(timeIntervalSince1970: milliseconds / 1000)
            default: nil
            }
        guard let date else { throw invalid(name, "must be an ISO-8601 date or epoch milliseconds") }
        guard Date.supportedRange.contains(date) else { throw invalid(name, "must be a date from 1970 to 2299") }
        return date
    }

    private func invalid(_ name: String, _ rule: String) -> APIError {
        APIError(.badRequest, "Invalid request body: \(name) \(rule)")
    }
}
