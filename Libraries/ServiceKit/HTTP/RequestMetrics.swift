import Dispatch
import HTTPTypes
import Hummingbird
import Metrics
import Synchronization

/// Counts and times requests under the names Hummingbird's `MetricsMiddleware` uses
/// (`hb.requests`, `hb.request.errors`, `http.server.request.duration` by route, method and
/// status; `http.server.active_requests` by method), but leaves a body whose length is known
/// as it is. Hummingbird's middleware wraps every body to time its writing, and a wrapped body
/// loses the server's one write of head, body and end: each response then takes two flushes
/// (two system calls) and more event-loop hops. A body of known length is written at once, so
/// its request is timed when the handler returns; a streamed body is still timed to its end.
struct RequestMetricsMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext

    private struct Key: Hashable {
        var route: String
        var method: HTTPRequest.Method
        var status: HTTPResponse.Status
    }

    private struct Instruments: Sendable {
        let requests: Counter
        let errors: Counter
        let duration: Timer
    }

    private final class Instrumentation: Sendable {
        private let byRoute = Mutex<[Key: Instruments]>([:])
        private let active = Mutex<[HTTPRequest.Method: Meter]>([:])

        func instruments(_ key: Key) -> Instruments {
            byRoute.withLock { byRoute in
                if let known = byRoute[key] { return known }
                let dimensions = [
                    ("http.route", key.route), ("http.request.method", key.method.rawValue),
                    ("http.response.status_code", String(key.status.code)),
                ]
                let made = Instruments(
                    requests: Counter(label: "hb.requests", dimensions: dimensions),
                    errors: Counter(label: "hb.request.errors", dimensions: dimensions),
                    duration: Timer(
                        label: "http.server.request.duration",
                        dimensions: dimensions,
                        preferredDisplayUnit: .seconds
                    )
                )
                byRoute[key] = made
                return made
            }
        }

        func activeRequests(_ method: HTTPRequest.Method) -> Meter {
            active.withLock { active in
                if let known = active[method] { return known }
                let made = Meter(
                    label: "http.server.active_requests",
                    dimensions: [("http.request.method", method.rawValue)]
                )
                active[method] = made
                return made
            }
        }
    }

    private let instrumentation = Instrumentation()

    func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let start = DispatchTime.now().uptimeNanoseconds
        let method = request.method
        let active = instrumentation.activeRequests(method)
        active.increment()
        let instrumentation = self.instrumentation
        @Sendable func record(_ status: HTTPResponse.Status, route: String, failed: Bool) {
            let instruments = instrumentation.instruments(Key(route: route, method: method, status: status))
            instruments.requests.increment()
            if failed { instruments.errors.increment() }
            instruments.duration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - start))
            active.decrement()
        }
        do {
            var response = try await next(request, context)
            let (status, route) = (response.status, context.endpointPath ?? "Unknown")
            if response.body.contentLength != nil {
                record(status, route: route, failed: false)
            } else {
                let body = response.body
                response.body = ResponseBody { writer in
                    defer { record(status, route: route, failed: false) }
                    try await body.write(writer)
                }
            }
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status ?? .internalServerError
            record(status, route: context.endpointPath ?? "NotFound", failed: true)
            throw error
        }
    }
}
