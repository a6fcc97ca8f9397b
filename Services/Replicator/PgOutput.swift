import Foundation
import Postgres

/// A decoded pgoutput (protocol 1) message; see PostgreSQL's "Logical Replication Message Formats".
enum PgOutputMessage: Equatable {
    case begin(finalLSN: LSN, commitTime: Date, xid: UInt32)
    case relation(PgOutputRelation)
    case insert(relation: UInt32, new: [PgOutputValue])
    /// `old` is the whole old row with `REPLICA IDENTITY FULL` (nil when only the key was sent or nothing).
    case update(relation: UInt32, old: [PgOutputValue]?, new: [PgOutputValue])
    case delete(relation: UInt32, old: [PgOutputValue])
    case commit(commitLSN: LSN, endLSN: LSN, commitTime: Date)
    /// Origin, type, truncate and logical messages: nothing to replicate.
    case other(UInt8)
}

struct PgOutputRelation: Equatable {
    var id: UInt32
    var namespace: String
    var name: String
    var columns: [String]
}

enum PgOutputValue: Equatable {
    case null
    /// An unchanged TOASTed value: the old row has it.
    case unchanged
    case text(String)
}

struct PgOutputError: Error, CustomStringConvertible {
    var description: String
}

extension PgOutputMessage {
    init(decoding bytes: [UInt8]) throws {
        var reader = Reader(bytes: bytes)
        let tag = try reader.byte()
        switch tag {
        case UInt8(ascii: "B"):
            let finalLSN = LSN(rawValue: try reader.uint64())
            let time = try reader.timestamp()
            self = .begin(finalLSN: finalLSN, commitTime: time, xid: try reader.uint32())
        case UInt8(ascii: "C"):
            _ = try reader.byte()
            let commitLSN = LSN(rawValue: try reader.uint64())
            let endLSN = LSN(rawValue: try reader.uint64())
            self = .commit(commitLSN: commitLSN, endLSN: endLSN, commitTime: try reader.timestamp())
        case UInt8(ascii: "R"):
            let id = try reader.uint32()
            let namespace = try reader.string()
            let name = try reader.string()
            _ = try reader.byte()  // replica identity
            let count = Int(try reader.uint16())
            var columns: [String] = []
            for _ in 0..<count {
                _ = try reader.byte()  // flags
                columns.append(try reader.string())
                _ = try reader.uint32()  // type oid
                _ = try reader.uint32()  // type modifier
            }
            self = .relation(PgOutputRelation(id: id, namespace: namespace, name: name, columns: columns))
        case UInt8(ascii: "I"):
            let relation = try reader.uint32()
            guard try reader.byte() == UInt8(ascii: "N") else {
                throw PgOutputError(description: "insert without a new tuple")
            }
            self = .insert(relation: relation, new: try reader.tuple())
        case UInt8(ascii: "U"):
            let relation = try reader.uint32()
            var old: [PgOutputValue]?
            var kind = try reader.byte()
            if kind == UInt8(ascii: "O") || kind == UInt8(ascii: "K") {
                let tuple = try reader.tuple()
                if kind == UInt8(ascii: "O") { old = tuple }
                kind = try reader.byte()
            }
            guard kind == UInt8(ascii: "N") else { throw PgOutputError(description: "update without a new tuple") }
            self = .update(relation: relation, old: old, new: try reader.tuple())
        case UInt8(ascii: "D"):
            let relation = try reader.uint32()
            _ = try reader.byte()  // K or O
            self = .delete(relation: relation, old: try reader.tuple())
        default:
            self = .other(tag)
        }
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func byte() throws -> UInt8 {
            guard offset < bytes.count else { throw PgOutputError(description: "message ends early") }
            defer { offset += 1 }
            return bytes[offset]
        }

        mutating func integer(_ size: Int) throws -> UInt64 {
            guard offset + size <= bytes.count else { throw PgOutputError(description: "message ends early") }
            defer { offset += size }
            return bytes[offset..<offset + size].reduce(0) { $0 << 8 | UInt64($1) }
        }

        mutating func uint16() throws -> UInt16 { UInt16(try integer(2)) }
        mutating func uint32() throws -> UInt32 { UInt32(try integer(4)) }
        mutating func uint64() throws -> UInt64 { try integer(8) }

        /// Microseconds since 2000-01-01.
        mutating func timestamp() throws -> Date {
            let microseconds = Int64(bitPattern: try uint64())
            return Date(timeIntervalSince1970: 946_684_800 + Double(microseconds) / 1_000_000)
        }

        mutating func string() throws -> String {
            guard let end = bytes[offset...].firstIndex(of: 0) else {
                throw PgOutputError(description: "unterminated string")
            }
            defer { offset = end + 1 }
            return String(decoding: bytes[offset..<end], as: UTF8.self)
        }

        mutating func tuple() throws -> [PgOutputValue] {
            let count = Int(try uint16())
            var values: [PgOutputValue] = []
            values.reserveCapacity(count)
            for _ in 0..<count {
                switch try byte() {
                case UInt8(ascii: "n"): values.append(.null)
                case UInt8(ascii: "u"): values.append(.unchanged)
                case UInt8(ascii: "t"), UInt8(ascii: "b"):
                    let length = Int(try uint32())
                    guard offset + length <= bytes.count else { throw PgOutputError(description: "value ends early") }
                    values.append(.text(String(decoding: bytes[offset..<offset + length], as: UTF8.self)))
                    offset += length
                default: throw PgOutputError(description: "unknown tuple value kind")
                }
            }
            return values
        }
    }
}
