import ServiceKit

/// Configuration of the realtime service, read once in `main`.
///
/// Keys: the common ones (see `CommonConfiguration`; HTTP port default 3002).
struct RealtimeConfiguration: Sendable {
    var common: CommonConfiguration

    init(environment: Environment) throws {
        common = try CommonConfiguration(environment: environment, defaultPort: 3002)
    }
}
