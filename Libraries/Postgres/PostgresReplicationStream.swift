internal import CLibPQ
import Foundation
import NIOPosix

/// A position in the write-ahead log.
public struct LSN: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Parses PostgreSQL's `X/Y` text form (`0/156F9E8`).
    public init?(_ text: String) {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16),
            high <= UInt32.max, low <= UInt32.max
        else { return nil }
        rawValue = high << 32 | low
    }

    public static let zero = LSN(rawValue: 0)

    public var description: String {
        String(rawValue >> 32, radix: 16, uppercase: true) + "/"
            + String(rawValue & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }

    public static func < (lhs: LSN, rhs: LSN) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// One message of the logical replication stream.
public enum ReplicationMessage: Sendable, Equatable {
    /// A WAL record decoded by the output plugin (pgoutput: `B`, `R`, `I`, `U`, `D`, `C`, …).
    case data(walStart: LSN, walEnd: LSN, payload: [UInt8])
    /// The server's heartbeat; when `replyRequested` it wants a status update at once.
    case keepalive(walEnd: LSN, replyRequested: Bool)
}

/// A logical replication connection (`replication=database`) reading one slot with pgoutput
/// protocol 1.
///
/// The caller reads with ``next(timeout:limit:)`` and acknowledges with ``sendStatus(flushed:)``; WAL
/// is kept by the server until acknowledged. `@unchecked Sendable`: the `PGconn` is only touched on
/// this stream's single thread, and callers use it from one task.
public final class PostgresReplicationStream: @unchecked Sendable {
    private let connection: OpaquePointer
    private let thread: NIOThreadPool
    /// The server's system identifier and timeline, from `IDENTIFY_SYSTEM`.
    public let systemIdentifier: String

    private init(connection: OpaquePointer, thread: NIOThreadPool, systemIdentifier: String) {
        self.connection = connection
        self.thread = thread
        self.systemIdentifier = systemIdentifier
    }

    deinit { PQfinish(connection) }

    /// Connects and starts streaming `slot` from `lsn` (`LSN.zero` = where the slot was confirmed).
    ///
    /// - Parameters:
    ///   - url: the usual connection URL; `replication=database` is added.
    ///   - slot: an existing logical slot using pgoutput; `[a-z0-9_]` only.
    ///   - publication: the publication to decode; `[a-z0-9_]` only.
    public static func start(
        url: String,
        slot: String,
        publication: String,
        from lsn: LSN = .zero
    ) async throws
        -> PostgresReplicationStream
    {
        for name in [slot, publication] where !isSafeIdentifier(name) {
            throw PostgresError(.invalidArgument, message: "\(name) is not a valid slot or publication name")
        }
        let thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        do {
            return try await thread.runIfActive {
                let separator = url.contains("?") ? "&" : "?"
                let replicationURL =
                    url.contains("://") ? url + separator + "replication=database" : url + " replication=database"
                guard let connection = PQconnectdb(replicationURL) else {
                    throw PostgresError(.connectionFailed, message: "libpq could not allocate a connection")
                }
                guard PQstatus(connection) == CONNECTION_OK else {
                    defer { PQfinish(connection) }
                    throw PostgresError(.connectionFailed, message: PostgresHandle.lastError(connection))
                }
                do {
                    let system = try simpleQuery(connection, "IDENTIFY_SYSTEM", expect: PGRES_TUPLES_OK)
                    // pgoutput sends values as text in this session's settings: the ones every
                    // decoder here reads, whatever the server's or the database's defaults.
                    _ = try simpleQuery(connection, "SET TimeZone = 'UTC'", expect: PGRES_COMMAND_OK)
                    _ = try simpleQuery(connection, "SET DateStyle = 'ISO, YMD'", expect: PGRES_COMMAND_OK)
                    let command =
                        "START_REPLICATION SLOT \(slot) LOGICAL \(lsn) (proto_version '1', publication_names '\(publication)')"
                    _ = try simpleQuery(connection, command, expect: PGRES_COPY_BOTH)
                    return PostgresReplicationStream(connection: connection, thread: thread, systemIdentifier: system)
                } catch {
                    PQfinish(connection)
                    throw error
                }
            }
        } catch {
            try? await thread.shutdownGracefully()
            throw error
        }
    }

    /// The messages that have arrived, at most `limit`, waiting up to `timeout` for the first;
    /// empty when none came. Reading all that is there at once, rather than one message per
    /// call, saves two thread hops per message: a create is three (begin, insert, commit).
    public func next(timeout: Duration = .seconds(1), limit: Int = 1000) async throws -> [ReplicationMessage] {
        let milliseconds = Int32(
            timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000
        )
        return try await thread.runIfActive { [self] in
            try Self.read(self.connection, timeoutMilliseconds: milliseconds, limit: limit)
        }
    }

    /// Tells the server that everything up to `flushed` is safely stored, so it may release that WAL.
    public func sendStatus(flushed: LSN) async throws {
        try await thread.runIfActive { [self] in
            let connection = self.connection
            var message: [UInt8] = [UInt8(ascii: "r")]
            for lsn in [flushed, flushed, flushed] { message.appendBigEndian(lsn.rawValue) }
            let postgresEpoch = Date(timeIntervalSince1970: 946_684_800)
            message.appendBigEndian(UInt64(Date().timeIntervalSince(postgresEpoch) * 1_000_000))
            message.append(0)
            let sent = message.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { PQputCopyData(connection, $0.baseAddress, Int32($0.count)) }
            }
            guard sent == 1, PQflush(connection) == 0 else {
                throw PostgresError(.replicationFailed, message: PostgresHandle.lastError(connection))
            }
        }
    }

    /// Ends the stream and closes the connection.
    public func close() async {
        try? await thread.shutdownGracefully()
    }

    private static func read(
        _ connection: OpaquePointer,
        timeoutMilliseconds: Int32,
        limit: Int
    ) throws -> [ReplicationMessage] {
        var messages: [ReplicationMessage] = []
        var waited = false
        while messages.count < limit {
            var buffer: UnsafeMutablePointer<CChar>?
            let length = PQgetCopyData(connection, &buffer, 1)
            if length > 0, let buffer {
                defer { PQfreemem(buffer) }
                messages.append(try decode([UInt8](UnsafeRawBufferPointer(start: buffer, count: Int(length)))))
                continue
            }
            if length == -1 {
                throw PostgresError(.replicationFailed, message: "the server ended the replication stream")
            }
            if length == -2 {
                throw PostgresError(.replicationFailed, message: PostgresHandle.lastError(connection))
            }
            // Nothing more buffered: return what was read, or wait once for the first.
            if waited || !messages.isEmpty { break }
            var descriptor = pollfd(fd: PQsocket(connection), events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, timeoutMilliseconds)
            if ready < 0 && errno != EINTR {
                throw PostgresError(.replicationFailed, message: "poll failed with errno \(errno)")
            }
            if PQconsumeInput(connection) == 0 {
                throw PostgresError(.replicationFailed, message: PostgresHandle.lastError(connection))
            }
            waited = ready == 0
        }
        return messages
    }

    private static func decode(_ bytes: [UInt8]) throws -> ReplicationMessage {
        switch bytes.first {
        case UInt8(ascii: "w") where bytes.count >= 25:
            return .data(
                walStart: LSN(rawValue: bytes.bigEndianUInt64(at: 1)),
                walEnd: LSN(rawValue: bytes.bigEndianUInt64(at: 9)),
                payload: Array(bytes[25...])
            )
        case UInt8(ascii: "k") where bytes.count >= 18:
            return .keepalive(walEnd: LSN(rawValue: bytes.bigEndianUInt64(at: 1)), replyRequested: bytes[17] != 0)
        default:
            throw PostgresError(.replicationFailed, message: "unknown replication message of \(bytes.count) bytes")
        }
    }

    private static func simpleQuery(
        _ connection: OpaquePointer,
        _ command: String,
        expect: ExecStatusType
    ) throws
        -> String
    {
        guard let result = PQexec(connection, command) else {
            throw PostgresError(.replicationFailed, message: PostgresHandle.lastError(connection))
        }
        defer { PQclear(result) }
        guard PQresultStatus(result) == expect else {
            throw PostgresHandle.error(from: result, connection: connection)
        }
        return PQntuples(result) > 0 ? String(cString: PQgetvalue(result, 0, 0)) : ""
    }

    private static func isSafeIdentifier(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 63
            && name.utf8.allSatisfy { (97...122).contains($0) || (48...57).contains($0) || $0 == 95 }
    }
}

extension [UInt8] {
    mutating func appendBigEndian(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    func bigEndianUInt64(at offset: Int) -> UInt64 {
        self[offset..<offset + 8].reduce(0) { $0 << 8 | UInt64($1) }
    }
}
