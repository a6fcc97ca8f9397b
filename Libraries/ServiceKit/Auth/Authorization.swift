import Contracts

/// What a route needs: `{action}:{resource}` for the named ids (either form of a session's id),
/// or one of the route's super-scopes, compared byte for byte. Empty ids never match.
public struct AccessRequirement: Sendable {
    public enum Action: String, Sendable { case read, write, admin }
    public enum Resource: String, Sendable { case sessions, tasks }

    public var action: Action
    public var resource: Resource
    public var ids: [String]
    public var superScopes: [String]

    public init(_ action: Action, _ resource: Resource, ids: [String?], superScopes: [String]) {
        self.action = action
        self.resource = resource
        self.ids = ids.compactMap { $0 }.filter { !$0.isEmpty }
        self.superScopes = superScopes
    }
}

extension Principal {
    /// Whether this caller meets `requirement`. A secret key meets every requirement.
    public func allows(_ requirement: AccessRequirement) -> Bool {
        guard let scopes else { return true }
        if requirement.superScopes.contains(where: scopes.containsBytes) { return true }
        let typeWide = "\(requirement.action.rawValue):\(requirement.resource.rawValue)"
        if scopes.containsBytes(typeWide) { return true }
        return requirement.ids.contains { scopes.containsBytes("\(typeWide):\($0)") }
    }

    /// The ids this caller's scopes name for `{action}:{resource}:{id}`, empty ones left out.
    /// Compare them with ``Swift/Sequence/containsBytes(_:)``.
    public func scopedIds(_ action: AccessRequirement.Action, _ resource: AccessRequirement.Resource) -> [String] {
        let prefix = Array("\(action.rawValue):\(resource.rawValue):".utf8)
        return (scopes ?? []).filter { $0.utf8.starts(with: prefix) && $0.utf8.count > prefix.count }.map {
            String(decoding: $0.utf8.dropFirst(prefix.count), as: UTF8.self)
        }
    }

    /// Throws 403 unless this caller meets `requirement`.
    public func authorize(_ requirement: AccessRequirement) throws {
        guard allows(requirement) else {
            throw APIError(.forbidden, "Unauthorized: this token does not grant \(requirement.action.rawValue) access")
        }
    }
}
