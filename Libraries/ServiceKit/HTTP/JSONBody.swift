import Contracts
import Foundation
import HTTPTypes
import Hummingbird

extension Request {
    /// Reads a body of at most `limit` bytes.
    ///
    /// - Throws: 413 when `Content-Length` is missing or over the limit; 400 when the body ends
    ///   before its `Content-Length`.
    public func limitedBody(limit: Int) async throws -> ByteBuffer {
        guard let length = headers[.contentLength].flatMap(Int.init) else {
            throw APIError(.payloadTooLarge, "Content-Length is required")
        }
        guard length <= limit else { throw APIError(.payloadTooLarge, "Request body too large") }
        do {
            return try await body.collect(upTo: limit)
        } catch let error as any HTTPResponseError {
            throw error
        } catch {
            // The connection ended inside the body: nothing is wrong on our side.
            throw APIError(.badRequest, "The request body ended before its Content-Length")
        }
    }

    /// How deeply a JSON body may nest. Values are stored and sent on inside other JSON
    /// (responses, events), and JSON coders give up past 512 levels.
    public static let maxJSONDepth = 32

    /// Reads a JSON object body of at most `limit` bytes.
    ///
    /// - Throws: 413 when `Content-Length` is missing or over the limit; 400 when the body is
    ///   empty, not JSON, not a JSON object, or nested deeper than ``maxJSONDepth``.
    public func jsonObject(limit: Int) async throws -> [String: JSONValue] {
        let buffer = try await limitedBody(limit: limit)
        guard buffer.readableBytes > 0 else { throw APIError(.badRequest, "Request body is empty") }
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: Data(buffer.readableBytesView)),
            !JSONValue.hasTrailingComma(buffer.readableBytesView)
        else {
            throw APIError(.badRequest, "Invalid JSON")
        }
        guard case .object(let members) = value else {
            throw APIError(.badRequest, "The request body must be a JSON object")
        }
        guard value.depth <= Self.maxJSONDepth else {
            throw APIError(.badRequest, "Invalid request body: JSON may nest at most \(Self.maxJSONDepth) levels deep")
        }
        if let path = value.pathToNUL() {
            throw APIError(.badRequest, "Invalid request body: \(path) must not contain NUL characters (\\u0000)")
        }
        return members
    }
}

extension JSONValue {
    /// Whether a comma ends an array or object (`[1,]`, `{"a":1,}`): JSON has none there, but
    /// Foundation's decoder takes it, and a body that is not JSON is refused as such.
    public static func hasTrailingComma(_ bytes: some Sequence<UInt8>) -> Bool {
        var inString = false
        var escaped = false
        var last: UInt8 = 0
        for byte in bytes {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"): continue
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                if last == UInt8(ascii: ",") { return true }
            case UInt8(ascii: "\""): inString = true
            default: break
            }
            last = byte
        }
        return false
    }
}
