import ArgumentParser
import Foundation

/// A failure the user can act on: printed as one line, exited with a code that says its kind.
struct CLIError: Error, CustomStringConvertible {
    /// Exit codes; documented in `sessionsctl --help`.
    enum Kind: Int32 {
        case failed = 1
        case rejected = 2
        case notFound = 3
        case denied = 4
        case unreachable = 5
        case timedOut = 6
        case usage = 64
    }

    var kind: Kind
    var message: String

    init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// The kind of failure an HTTP status stands for.
    init(status: Int, message: String) {
        switch status {
        case 401, 403: kind = .denied
        case 404: kind = .notFound
        case 400..<500: kind = .rejected
        default: kind = .failed
        }
        self.message = "\(message) (HTTP \(status))"
    }

    var description: String { message }
}

/// Runs a command body; a failure becomes one line on stderr and its exit code.
func reporting(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as CLIError {
        FileHandle.standardError.write(Data("sessionsctl: \(error.message)\n".utf8))
        throw ExitCode(error.kind.rawValue)
    }
}

/// Writes a line to standard output.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// Writes a note for people to standard error (progress, hints), never mixed into data.
func note(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
