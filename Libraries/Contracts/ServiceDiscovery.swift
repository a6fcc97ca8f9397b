import Foundation

/// Wire types of the NATS service protocol (ADR-32): the replies to `$SRV.PING|INFO|STATS`.
/// Field names are snake_case on the wire.
public enum ServiceDiscovery {
    public static let prefix = "$SRV"
    public static let pingType = "io.nats.micro.v1.ping_response"
    public static let infoType = "io.nats.micro.v1.info_response"
    public static let statsType = "io.nats.micro.v1.stats_response"

    public enum Verb: String, Sendable, CaseIterable {
        case ping = "PING"
        case info = "INFO"
        case stats = "STATS"
    }

    /// The three subjects an instance answers for a verb: all services, all of its kind, itself.
    public static func subjects(for verb: Verb, name: String, id: String) -> [String] {
        let base = "\(prefix).\(verb.rawValue)"
        return [base, "\(base).\(name)", "\(base).\(name).\(id)"]
    }

    public struct Ping: Codable, Sendable, Equatable {
        public var type: String
        public var name: String
        public var id: String
        public var version: String
        public var metadata: [String: String]

        public init(name: String, id: String, version: String, metadata: [String: String]) {
            self.type = ServiceDiscovery.pingType
            self.name = name
            self.id = id
            self.version = version
            self.metadata = metadata
        }
    }

    public struct EndpointInfo: Codable, Sendable, Equatable {
        public var name: String
        public var subject: String
        public var queueGroup: String
        public var metadata: [String: String]?

        enum CodingKeys: String, CodingKey {
            case name, subject, metadata
            case queueGroup = "queue_group"
        }

        public init(name: String, subject: String, queueGroup: String, metadata: [String: String]? = nil) {
            self.name = name
            self.subject = subject
            self.queueGroup = queueGroup
            self.metadata = metadata
        }
    }

    public struct Info: Codable, Sendable, Equatable {
        public var type: String
        public var name: String
        public var id: String
        public var version: String
        public var metadata: [String: String]
        public var description: String
        public var endpoints: [EndpointInfo]

        public init(
            name: String,
            id: String,
            version: String,
            metadata: [String: String],
            description: String,
            endpoints: [EndpointInfo]
        ) {
            self.type = ServiceDiscovery.infoType
            self.name = name
            self.id = id
            self.version = version
            self.metadata = metadata
            self.description = description
            self.endpoints = endpoints
        }
    }

    public struct EndpointStats: Codable, Sendable, Equatable {
        public var name: String
        public var subject: String
        public var queueGroup: String
        public var numRequests: Int
        public var numErrors: Int
        public var lastError: String
        /// Total processing time in nanoseconds.
        public var processingTime: Int64
        /// Average processing time in nanoseconds.
        public var averageProcessingTime: Int64

        enum CodingKeys: String, CodingKey {
            case name, subject
            case queueGroup = "queue_group"
            case numRequests = "num_requests"
            case numErrors = "num_errors"
            case lastError = "last_error"
            case processingTime = "processing_time"
            case averageProcessingTime = "average_processing_time"
        }

        public init(
            name: String,
            subject: String,
            queueGroup: String,
            numRequests: Int,
            numErrors: Int,
            lastError: String,
            processingTime: Int64
        ) {
            self.name = name
            self.subject = subject
            self.queueGroup = queueGroup
            self.numRequests = numRequests
            self.numErrors = numErrors
            self.lastError = lastError
            self.processingTime = processingTime
            self.averageProcessingTime = numRequests == 0 ? 0 : processingTime / Int64(numRequests)
        }
    }

    public struct Stats: Codable, Sendable, Equatable {
        public var type: String
        public var name: String
        public var id: String
        public var version: String
        public var metadata: [String: String]
        /// ISO-8601 UTC start time of the instance.
        public var started: String
        public var endpoints: [EndpointStats]

        public init(
            name: String,
            id: String,
            version: String,
            metadata: [String: String],
            started: String,
            endpoints: [EndpointStats]
        ) {
            self.type = ServiceDiscovery.statsType
            self.name = name
            self.id = id
            self.version = version
            self.metadata = metadata
            self.started = started
            self.endpoints = endpoints
        }
    }
}

/// Header names of NATS service errors.
public enum ServiceErrorHeaders {
    public static let description = "Nats-Service-Error"
    public static let code = "Nats-Service-Error-Code"
}
