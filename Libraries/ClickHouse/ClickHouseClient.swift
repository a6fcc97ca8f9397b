import Contracts
import Foundation
import HTTPClient

/// A client for ClickHouse's HTTP interface.
///
/// Values never go into SQL text: queries name typed parameters (`{name:String}`) and the values
/// travel as `param_name` URL parameters.
public final class ClickHouseClient: Sendable {
    /// A value for a `{name:Type}` placeholder, written the way ClickHouse reads that type.
    public enum Parameter: Sendable, Equatable, ExpressibleByStringLiteral {
        /// For `String` and number placeholders: TSV-escaped text.
        case text(String)
        /// For `Array(String)`: an array literal, whose quoted elements ClickHouse reads as they
        /// are (no TSV layer over it: `\\` stays an escaped backslash, `\'` a quote).
        case strings([String])

        public init(stringLiteral value: String) { self = .text(value) }

        var encoded: String {
            switch self {
            case .text(let value): value.escaped(Self.controls)
            case .strings(let values):
                "["
                    + values.map { "'" + $0.escaped(Self.quoted) + "'" }
                    .joined(separator: ",") + "]"
            }
        }

        private static let controls: [Unicode.Scalar: String] = [
            "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r",
        ]
        private static let quoted = controls.merging(["'": "\\'"]) { $1 }
    }

    public struct Configuration: Sendable {
        /// The HTTP interface, e.g. `http://127.0.0.1:8123`.
        public var url: String
        /// Default `default`.
        public var database: String
        /// Per-query timeout. Default 30 s.
        public var timeout: Duration

        public init(url: String, database: String = "default", timeout: Duration = .seconds(30)) {
            self.url = url
            self.database = database
            self.timeout = timeout
        }
    }

    public let configuration: Configuration
    private let http: HTTPClient

    public init(configuration: Configuration, http: HTTPClient) {
        self.configuration = configuration
        self.http = http
    }

    /// Checks that the server answers `GET /ping`; used by readiness probes.
    public func ping(timeout: Duration = .seconds(2)) async throws {
        let response = try await http.execute(HTTPRequest(url: configuration.url + "/ping", timeout: timeout))
        guard response.status == 200 else {
            throw ClickHouseError(
                status: response.status,
                exceptionCode: nil,
                message: "ping answered \(response.status)"
            )
        }
    }

    /// Runs a statement and returns the raw response body.
    ///
    /// - Parameters:
    ///   - sql: the statement; for `INSERT … FORMAT X` the rows go in `data`.
    ///   - parameters: values for `{name:Type}` placeholders.
    ///   - settings: ClickHouse settings for this query only.
    @discardableResult
    public func execute(
        _ sql: String,
        parameters: [String: Parameter] = [:],
        settings: [String: String] = [:],
        data: Data? = nil
    ) async throws -> Data {
        var query = [("database", configuration.database), ("query", sql)]
        query += parameters.sorted { $0.key < $1.key }.map { ("param_\($0.key)", $0.value.encoded) }
        query += settings.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        let response = try await http.execute(
            HTTPRequest(
                method: "POST",
                url: configuration.url + "/?" + query.map { "\($0)=\(Self.encode($1))" }.joined(separator: "&"),
                body: data ?? Data(),
                timeout: configuration.timeout
            )
        )
        guard response.status == 200 else {
            throw ClickHouseError(
                status: response.status,
                exceptionCode: response.headers["X-ClickHouse-Exception-Code"].flatMap { Int($0) },
                message: String(decoding: response.body.prefix(2000), as: UTF8.self)
            )
        }
        return response.body
    }

    /// Runs a query with `FORMAT JSONEachRow` appended and decodes one `Row` per line.
    public func query<Row: Decodable>(
        _ sql: String,
        parameters: [String: Parameter] = [:],
        settings: [String: String] = [:],
        as type: Row.Type
    ) async throws -> [Row] {
        let body = try await execute(sql + "\nFORMAT JSONEachRow", parameters: parameters, settings: settings)
        let decoder = JSONDecoder()
        return try body.split(separator: UInt8(ascii: "\n")).map { try decoder.decode(Row.self, from: Data($0)) }
    }

    private static let unreserved = CharacterSet(
        charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
    )

    private static func encode(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: unreserved) ?? ""
    }
}

/// ClickHouse refused a query. `exceptionCode` is ClickHouse's error code (62 syntax error,
/// 60 unknown table, …) from the `X-ClickHouse-Exception-Code` header.
public struct ClickHouseError: RetriableError, Sendable, CustomStringConvertible {
    public var status: Int
    public var exceptionCode: Int?
    public var message: String

    public init(status: Int, exceptionCode: Int?, message: String) {
        self.status = status
        self.exceptionCode = exceptionCode
        self.message = message
    }

    /// True for overload and availability errors, where the same query may succeed later;
    /// false for errors in the query or the data.
    public var isRetriable: Bool {
        if status == 503 || status == 502 || status == 504 || status == 429 { return true }
        // TOO_MANY_SIMULTANEOUS_QUERIES, TIMEOUT_EXCEEDED, NETWORK_ERROR, SOCKET_TIMEOUT,
        // TOO_MANY_PARTS, KEEPER_EXCEPTION, ALL_CONNECTION_TRIES_FAILED, TABLE_IS_READ_ONLY
        return [202, 159, 210, 209, 252, 999, 279, 242].contains(exceptionCode ?? -1)
    }

    public var description: String {
        "ClickHouseError(status \(status)\(exceptionCode.map { ", code \($0)" } ?? ""), \(message))"
    }
}

extension String {
    /// Each scalar found in `replacements` replaced by its text (scalars, so the `\r` and `\n` of
    /// a CRLF are each found).
    fileprivate func escaped(_ replacements: [Unicode.Scalar: String]) -> String {
        var result = ""
        for scalar in unicodeScalars {
            if let replacement = replacements[scalar] {
                result += replacement
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }
}
