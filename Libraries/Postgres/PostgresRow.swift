import Contracts
import Foundation

/// One row of a result, with every column in PostgreSQL's text format.
public struct PostgresRow: Sendable {
    let columns: [String]
    let values: [String?]

    /// The text value of a column, or nil when it is NULL or absent.
    public subscript(_ column: String) -> String? {
        guard let index = columns.firstIndex(of: column) else { return nil }
        return values[index]
    }

    /// Reads a non-null column as `type`.
    public func decode<Value: PostgresDecodable>(_ column: String, as type: Value.Type = Value.self) throws -> Value {
        guard let index = columns.firstIndex(of: column) else {
            throw PostgresError(.decodingFailed, message: "no column \(column) in the result")
        }
        guard let text = values[index] else {
            throw PostgresError(.decodingFailed, message: "column \(column) is NULL")
        }
        guard let value = Value(postgresText: text) else {
            throw PostgresError(.decodingFailed, message: "column \(column) is not a \(Value.self)")
        }
        return value
    }

    /// Reads a nullable column as `type`.
    public func decode<Value: PostgresDecodable>(_ column: String, as type: Value?.Type) throws -> Value? {
        guard self[column] != nil else { return nil }
        return try decode(column, as: Value.self)
    }
}

/// A value read from PostgreSQL's text format.
public protocol PostgresDecodable: Sendable {
    init?(postgresText: String)
}

extension String: PostgresDecodable {
    public init?(postgresText: String) { self = postgresText }
}

extension Int: PostgresDecodable {
    public init?(postgresText: String) { self.init(postgresText) }
}

extension Int64: PostgresDecodable {
    public init?(postgresText: String) { self.init(postgresText) }
}

extension Double: PostgresDecodable {
    public init?(postgresText: String) { self.init(postgresText) }
}

extension Bool: PostgresDecodable {
    public init?(postgresText: String) {
        switch postgresText {
        case "t", "true": self = true
        case "f", "false": self = false
        default: return nil
        }
    }
}

extension Date: PostgresDecodable {
    /// Reads `timestamptz` text as sent with `DateStyle = ISO` and `TimeZone = UTC`, which every
    /// pooled connection sets: `2026-11-28 10:00:00.123+00`.
    public init?(postgresText: String) {
        var text = postgresText.replacingOccurrences(of: " ", with: "T")
        if text.hasSuffix("+00") { text = String(text.dropLast(3)) + "Z" }
        guard let date = ISO8601.date(from: text) else { return nil }
        self = date
    }
}

extension Array: PostgresDecodable where Element == String {
    /// Reads a one-dimensional text array (`{a,"b c",NULL}`); NULL elements are dropped.
    public init?(postgresText: String) {
        guard postgresText.hasPrefix("{"), postgresText.hasSuffix("}") else { return nil }
        var items: [String] = []
        var current = ""
        var quoted = false
        var wasQuoted = false
        var escaped = false
        for character in postgresText.dropFirst().dropLast() {
            if escaped {
                current.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character == "\"" {
                quoted.toggle()
                wasQuoted = true
            } else if character == "," && !quoted {
                if wasQuoted || current != "NULL" { items.append(current) }
                current = ""
                wasQuoted = false
            } else {
                current.append(character)
            }
        }
        if wasQuoted || (!current.isEmpty && current != "NULL") { items.append(current) }
        self = items
    }
}
