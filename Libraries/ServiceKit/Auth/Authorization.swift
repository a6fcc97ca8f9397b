import Contracts

/// What a route needs: `{action}:{resource}` for the named ids (either form of a session's id),
/// or one of the route's super-scopes. Empty ids never match.
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
        if requirement.superScopes.contains(where: scopes.contains) { return true }
        let typeWide = "\(requirement.action.rawValue):\(requirement.resource.rawValue)"
        if scopes.contains(typeWide) { return true }
        return requirement.ids.contains { scopes.contains("\(typeWide):\($0)") }
    }

    /// The ids this caller's scopes name for `{action}:{resource}:{id}`, empty ones left out.
    public func scopedIds(_ action: AccessRequirement.Action, _ resource: AccessRequirement.Resource) -> [String] {
        let prefix = "\(action.rawValue):\(resource.rawValue):"
        return (scopes ?? []).filter { $0.hasPrefix(prefix) && $0.count > prefix.count }.map {
            String($0.dropFirst(prefix.count))
        }
    }

    /// Throws 403 unless this caller meets `requirement`.
    public func authorize(_ requirement: AccessRequirement) throws {
        guard allows(requirement) else {
            throw APIError(.forbidden, "Unauthorized: this token does not grant \(requirement.action.rawValue) access")
        }
    }
}
