import Contracts
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// An endpoint of a ``NatsService``: a queue subscription whose handler turns a request into a
/// reply payload.
public struct NatsEndpoint: Sendable {
    public typealias Handler = @Sendable (NatsMessage) async throws -> Data

    public var name: String
    public var subject: String
    /// Instances in one queue group share the requests. Default `q`.
    public var queueGroup: String
    public var metadata: [String: String]?
    public var handler: Handler

    public init(
        name: String,
        subject: String? = nil,
        queueGroup: String = "q",
        metadata: [String: String]? = nil,
        handler: @escaping Handler
    ) {
        self.name = name
        self.subject = subject ?? name
        self.queueGroup = queueGroup
        self.metadata = metadata
        self.handler = handler
    }
}

/// The error an endpoint handler throws to answer with a service error (headers
/// `Nats-Service-Error` and `Nats-Service-Error-Code`, body `{"error": description}`).
/// Clients of ``NatsConnection/serviceRequest(_:payload:timeout:)`` get it back as thrown.
public struct NatsServiceError: RetriableError, Sendable, Equatable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String

    /// The service said "unavailable": one of its own dependencies is down, so a caller that
    /// passes it on answers 503 and `Retry-After`.
    public var isRetriable: Bool { code == .unavailable }

    public init(_ code: ErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "NatsServiceError(\(code.status) \(code), \(message))" }
}

/// A service following the NATS service protocol (ADR-32): it answers `$SRV.PING|INFO|STATS`
/// (all instances, plain subscriptions) and serves its endpoints as queue subscriptions, so
/// instances scale out by running more of them.
///
/// Graceful shutdown drains every subscription and waits for in-flight requests to be answered.
///
/// Under overload it sheds rather than grows: each endpoint runs at most `concurrency` requests
/// at once and holds at most `waiting` more; past that the oldest waiting request is answered
/// `unavailable` at once (its caller would soon give up on it anyway).
public final class NatsService: Service, Sendable {
    public let name: String
    public let id: String
    public let version: String
    public let description: String
    public let metadata: [String: String]
    private let connection: NatsConnection
    private let endpoints: [NatsEndpoint]
    private let logger: Logger
    private let started = Date()
    private let stats: Mutex<[String: ServiceDiscovery.EndpointStats]>
    private let concurrency: Int
    private let waiting: Int

    public init(
        connection: NatsConnection,
        name: String,
        version: String,
        description: String,
        metadata: [String: String] = [:],
        endpoints: [NatsEndpoint],
        concurrency: Int = 256,
        waiting: Int = 4096,
        logger: Logger
    ) {
        self.concurrency = concurrency
        self.waiting = waiting
        self.connection = connection
        self.name = name
        self.id = UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        self.version = version
        self.description = description
        self.metadata = metadata
        self.endpoints = endpoints
        self.logger = logger
        self.stats = Mutex(
            Dictionary(
                uniqueKeysWithValues: endpoints.map {
                    (
                        $0.name,
                        ServiceDiscovery.EndpointStats(
                            name: $0.name,
                            subject: $0.subject,
                            queueGroup: $0.queueGroup,
                            numRequests: 0,
                            numErrors: 0,
                            lastError: "",
                            processingTime: 0
                        )
                    )
                }
            )
        )
    }

    public func run() async throws {
        var subscriptions: [(NatsSubscription, NatsEndpoint.Handler, String?)] = []
        // Endpoints first: the server takes subscriptions in order, so once discovery answers,
        // every endpoint is in place too.
        for endpoint in endpoints {
            let subscription = try connection.subscribe(
                endpoint.subject,
                queue: endpoint.queueGroup,
                limit: waiting,
                onDrop: { [self] message in
                    let failure = NatsServiceError(.unavailable, "Service overloaded; try again")
                    record(failure, for: endpoint.name, elapsed: 0)
                    answer(message, failure: failure)
                }
            )
            subscriptions.append((subscription, endpoint.handler, endpoint.name))
        }
        for verb in ServiceDiscovery.Verb.allCases {
            for subject in ServiceDiscovery.subjects(for: verb, name: name, id: id) {
                let subscription = try connection.subscribe(subject)
                subscriptions.append((subscription, { [self] _ in try discoveryReply(verb) }, nil))
            }
        }
        let served = subscriptions
        logger.debug("Serving NATS endpoints.", metadata: ["nats.service": "\(name)", "nats.service.id": "\(id)"])
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for (subscription, handler, endpoint) in served {
                    group.addTask { await self.serve(subscription, handler: handler, endpoint: endpoint) }
                }
            }
        } onGracefulShutdown: {
            for (subscription, _, _) in served { subscription.drain() }
        }
    }

    private func serve(
        _ subscription: NatsSubscription,
        handler: @escaping NatsEndpoint.Handler,
        endpoint: String?
    ) async {
        await withTaskGroup(of: Void.self) { group in
            var running = 0
            var messages = subscription.makeAsyncIterator()
            while true {
                // A message is taken only when it can run: the rest wait in the bounded stream.
                if running == concurrency {
                    await group.next()
                    running -= 1
                }
                guard let message = await messages.next() else { break }
                group.addTask { await self.handle(message, handler: handler, endpoint: endpoint) }
                running += 1
            }
        }
    }

    private func handle(_ message: NatsMessage, handler: NatsEndpoint.Handler, endpoint: String?) async {
        let start = ContinuousClock.now
        var failure: NatsServiceError?
        var reply = Data()
        do {
            reply = try await handler(message)
        } catch let error as NatsServiceError {
            failure = error
        } catch let error as any RetriableError where error.isRetriable {
            // A server it depends on is down or restarting: the caller may try again.
            logger.warning(
                "A NATS endpoint's dependency is unavailable.",
                metadata: ["nats.subject": "\(message.subject)", "error": "\(error)"]
            )
            failure = NatsServiceError(.unavailable, "Service temporarily unavailable; try again")
        } catch {
            logger.error(
                "A NATS endpoint failed.",
                metadata: ["nats.subject": "\(message.subject)", "error": "\(error)"]
            )
            failure = NatsServiceError(.internalError, "Internal Server Error")
        }
        if let endpoint { record(failure, for: endpoint, elapsed: (ContinuousClock.now - start).nanoseconds) }
        answer(message, reply: reply, failure: failure)
    }

    private func record(_ failure: NatsServiceError?, for endpoint: String, elapsed: Int64) {
        stats.withLock { stats in
            guard var entry = stats[endpoint] else { return }
            entry.numRequests += 1
            entry.processingTime += elapsed
            entry.averageProcessingTime = entry.processingTime / Int64(entry.numRequests)
            if let failure {
                entry.numErrors += 1
                entry.lastError = "\(failure.code.status):\(failure.message)"
            }
            stats[endpoint] = entry
        }
    }

    private func answer(_ message: NatsMessage, reply: Data = Data(), failure: NatsServiceError?) {
        guard let replySubject = message.replySubject else { return }
        do {
            if let failure {
                try connection.publish(
                    replySubject,
                    payload: try JSONEncoder().encode(ErrorBody(error: failure.message)),
                    headers: [
                        ServiceErrorHeaders.description: failure.message,
                        ServiceErrorHeaders.code: String(failure.code.status),
                    ]
                )
            } else {
                try connection.publish(replySubject, payload: reply)
            }
        } catch {
            logger.debug(
                "Could not send a NATS reply.",
                metadata: ["nats.subject": "\(replySubject)", "error": "\(error)"]
            )
        }
    }

    private func discoveryReply(_ verb: ServiceDiscovery.Verb) throws -> Data {
        let encoder = JSONEncoder()
        switch verb {
        case .ping:
            return try encoder.encode(ServiceDiscovery.Ping(name: name, id: id, version: version, metadata: metadata))
        case .info:
            let endpointInfo = endpoints.map {
                ServiceDiscovery.EndpointInfo(
                    name: $0.name,
                    subject: $0.subject,
                    queueGroup: $0.queueGroup,
                    metadata: $0.metadata
                )
            }
            return try encoder.encode(
                ServiceDiscovery.Info(
                    name: name,
                    id: id,
                    version: version,
                    metadata: metadata,
                    description: description,
                    endpoints: endpointInfo
                )
            )
        case .stats:
            let endpointStats = stats.withLock { stats in endpoints.compactMap { stats[$0.name] } }
            return try encoder.encode(
                ServiceDiscovery.Stats(
                    name: name,
                    id: id,
                    version: version,
                    metadata: metadata,
                    started: ISO8601.string(from: started),
                    endpoints: endpointStats
                )
            )
        }
    }
}

extension NatsConnection {
    /// Sends a request to a ``NatsService`` endpoint and returns the reply payload.
    ///
    /// - Throws: ``NatsServiceError`` when the service answered with an error;
    ///   `NatsError` `.timeout` / `.noResponders` when no service answered.
    public func serviceRequest(_ subject: String, payload: Data = Data(), timeout: Duration? = nil) async throws -> Data
    {
        let reply = try await request(subject, payload: payload, timeout: timeout)
        if let code = reply.headers[ServiceErrorHeaders.code] {
            throw NatsServiceError(
                ErrorCode(status: Int(code) ?? 500),
                reply.headers[ServiceErrorHeaders.description] ?? "service error \(code)"
            )
        }
        return reply.payload
    }
}
