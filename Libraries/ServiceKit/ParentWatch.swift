import Foundation
import Logging
import ServiceLifecycle

/// Ends the service group gracefully when the parent process is gone — for supervisors (and
/// test runners) that start a service and must not leave it behind if they die. Enabled by
/// `SESSIONS_PARENT_PID`, the parent's pid: once this process is re-parented, the parent died.
struct ParentWatch: Service {
    let pid: pid_t
    let logger: Logger

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if getppid() != pid {
                logger.notice("The parent process is gone; shutting down.", metadata: ["parent.pid": "\(pid)"])
                return
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }
}
