import Foundation

/// A NATS server of this test's own, so it can be stopped and started again.
public final class OwnNatsServer: @unchecked Sendable {
    public let port: Int
    /// JetStream's store when it has JetStream: kept across a stop and a start.
    public let storeDirectory: URL?
    private var process: Process?

    public init(jetStream: Bool = false) throws {
        port = try TestServers.freePort()
        storeDirectory =
            jetStream ? FileManager.default.temporaryDirectory.appendingPathComponent("nats-\(port)") : nil
    }

    public var url: String { "nats://127.0.0.1:\(port)" }

    public func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try TestServers.natsServerBinary)
        process.arguments =
            ["-a", "127.0.0.1", "-p", String(port)] + (storeDirectory.map { ["-js", "-sd", $0.path] } ?? [])
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
    }

    public func stop() async throws {
        guard let process else { return }
        process.terminate()
        _ = try await TestServers.waitUntil { !process.isRunning }
        self.process = nil
    }

    /// Stops it and removes its JetStream store.
    public func remove() async throws {
        try await stop()
        if let storeDirectory { try? FileManager.default.removeItem(at: storeDirectory) }
    }
}
