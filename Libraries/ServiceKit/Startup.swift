import Logging

/// Runs a start-up step that needs a dependency, retrying while it is not reachable yet
/// (every second, up to `attempts` times), with a log line per failed attempt. Errors for which
/// `isRetriable` is false are thrown at once.
@discardableResult
public func retryingAtStartup<Result>(
    _ dependency: String,
    attempts: Int = 30,
    logger: Logger,
    isRetriable: (any Error) -> Bool,
    _ step: () async throws -> Result
) async throws -> Result {
    var attempt = 1
    while true {
        do {
            return try await step()
        } catch {
            guard attempt < attempts, isRetriable(error) else { throw error }
            logger.warning(
                "A dependency is not reachable yet; retrying.",
                metadata: ["dependency": "\(dependency)", "attempt": "\(attempt)", "error": "\(error)"]
            )
            attempt += 1
            try await Task.sleep(for: .seconds(1))
        }
    }
}
