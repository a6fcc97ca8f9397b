import Contracts
import Foundation

/// A parameterised SQL statement. Interpolated values become `$n` parameters, never SQL text:
///
///     try await client.query("SELECT id FROM sessions WHERE external_id = \(externalId)")
///
/// Identifiers (which PostgreSQL cannot take as parameters) are interpolated with
/// `\(identifier: name)` and quoted safely.
public struct PostgresQuery: Sendable, ExpressibleByStringInterpolation {
    public private(set) var sql: String
    public private(set) var parameters: [String?]

    public init(stringLiteral value: StaticString) {
        self.sql = value.description
        self.parameters = []
    }

    public init(stringInterpolation: StringInterpolation) {
        self.sql = stringInterpolation.sql
        self.parameters = stringInterpolation.parameters
    }

    public struct StringInterpolation: StringInterpolationProtocol {
        var sql = ""
        var parameters: [String?] = []

        public init(literalCapacity: Int, interpolationCount: Int) {
            sql.reserveCapacity(literalCapacity + interpolationCount * 3)
        }

        public mutating func appendLiteral(_ literal: StaticString) {
            sql += literal.description
        }

        public mutating func appendInterpolation(_ value: some PostgresEncodable) {
            parameters.append(value.postgresText)
            sql += "$\(parameters.count)"
        }

        public mutating func appendInterpolation(_ value: (some PostgresEncodable)?) {
            parameters.append(value?.postgresText)
            sql += "$\(parameters.count)"
        }

        /// SQL text fixed in the code (a column list shared by several statements).
        public mutating func appendInterpolation(unescaped sql: StaticString) {
            self.sql += sql.description
        }

        /// A quoted identifier (table, publication, slot name); embedded quotes are doubled.
        public mutating func appendInterpolation(identifier: String) {
            sql += "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
    }
}

/// A value sent as a text-format query parameter.
public protocol PostgresEncodable: Sendable {
    var postgresText: String { get }
}

extension String: PostgresEncodable {
    public var postgresText: String { self }
}

extension Int: PostgresEncodable {
    public var postgresText: String { String(self) }
}

extension Int64: PostgresEncodable {
    public var postgresText: String { String(self) }
}

extension Int32: PostgresEncodable {
    public var postgresText: String { String(self) }
}

extension Double: PostgresEncodable {
    public var postgresText: String { String(self) }
}

extension Bool: PostgresEncodable {
    public var postgresText: String { self ? "t" : "f" }
}

extension Date: PostgresEncodable {
    /// ISO-8601 in UTC with milliseconds (to the nearest, as the API writes them).
    public var postgresText: String { ISO8601.string(from: self) }
}

extension Array: PostgresEncodable where Element == String {
    /// An array literal (`{"a","b"}`) with every element quoted and escaped.
    public var postgresText: String {
        let items = map { item in
            "\"" + item.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }
        return "{" + items.joined(separator: ",") + "}"
    }
}
