import Foundation
import Hummingbird
import ServiceKit

/// Operations as `METHOD /path`, to compare the served OpenAPI document with a service's router.
enum RouteDocument {
    /// The document's operations on paths starting with one of `prefixes`.
    static func documented(_ body: Data, prefixes: [String]) throws -> Set<String> {
        let document = try JSONSerialization.jsonObject(with: body) as? [String: Any]
        let paths = document?["paths"] as? [String: [String: Any]] ?? [:]
        let methods = ["get", "put", "post", "patch", "delete", "head"]
        return Set(
            paths.filter { path, _ in prefixes.contains { path.hasPrefix($0) } }
                .flatMap { path, item in item.keys.filter(methods.contains).map { "\($0.uppercased()) \(path)" } }
        )
    }

    /// The router's operations.
    static func routed(_ router: Router<APIRequestContext>) -> Set<String> {
        Set(
            router.routes.map { route in
                let path = "\(route.path)"
                return "\(route.method.rawValue) \(path.hasPrefix("/") ? path : "/" + path)"
            }
        )
    }
}
