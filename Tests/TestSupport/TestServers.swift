import Foundation

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

    /// A TCP port nothing listens on right now.
    public static func freePort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw POSIXError(.EMFILE) }
        defer { close(descriptor) }
        var address = loopbackAddress(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(descriptor, socketAddress, length) == 0 && getsockname(descriptor, socketAddress, &length) == 0
            }
        }
        guard bound else { throw POSIXError(.EADDRINUSE) }
        return Int(UInt16(bigEndian: address.sin_port))
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
