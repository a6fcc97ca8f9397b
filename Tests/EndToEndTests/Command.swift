import Foundation
import TestSupport

/// A command-line program run by a test, its output captured to files (pipes could fill up and
/// block it).
final class Command: @unchecked Sendable {
    let process = Process()
    let stdout: URL
    let stderr: URL

    init(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil, stdin: String? = nil) throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent(TestServers.uniqueName("command"))
        stdout = base.appendingPathExtension("out")
        stderr = base.appendingPathExtension("err")
        for file in [stdout, stderr] { _ = FileManager.default.createFile(atPath: file.path, contents: nil) }
        process.executableURL = executable
        process.arguments = arguments
        if let environment { process.environment = environment }
        process.standardOutput = try FileHandle(forWritingTo: stdout)
        process.standardError = try FileHandle(forWritingTo: stderr)
        if let stdin {
            let pipe = Pipe()
            process.standardInput = pipe
            try process.run()
            pipe.fileHandleForWriting.write(Data(stdin.utf8))
            try pipe.fileHandleForWriting.close()
        } else {
            process.standardInput = FileHandle.nullDevice
            try process.run()
        }
    }

    var output: String { (try? String(contentsOf: stdout, encoding: .utf8)) ?? "" }
    var errors: String { (try? String(contentsOf: stderr, encoding: .utf8)) ?? "" }
    var lines: [String] { output.split(separator: "\n").map(String.init) }

    /// Waits for the process to exit and returns its exit status.
    func finish(timeout: Duration = .seconds(30)) async throws -> Int32 {
        guard try await TestServers.waitUntil(timeout: timeout, { !process.isRunning }) else {
            process.terminate()
            throw FixtureError("\(process.arguments ?? []) did not finish: \(output) \(errors)")
        }
        return process.terminationStatus
    }
}
