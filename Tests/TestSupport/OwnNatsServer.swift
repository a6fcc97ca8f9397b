import Foundation

/// A NATS server of this test's own, so it can be stopped and started again.
public final class OwnNatsServer: @unchecked Sendable {
    public let port: Int
    private var process: Process?

    public init() throws { port = try TestServers.freePort() }

    public var url: String { "nats://127.0.0.1:\(port)" }

    public func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try TestServers.natsServerBinary)
        process.arguments = ["-a", "127.0.0.1", "-p", String(port)]
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
}
