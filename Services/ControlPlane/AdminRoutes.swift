import Contracts
import Foundation
import Hummingbird
import ServiceKit

/// `/api/v1/admin/…`: tenancy administration over HTTP for `sessionsctl env create`, guarded by
/// the operator's `SESSIONS_ADMIN_TOKEN` (not an environment key). Off unless that is set.
struct AdminRoutes: Sendable {
    let tenancy: Tenancy
    let adminToken: String?

    static let bodyLimit = 4 * 1024

    func add(to router: Router<APIRequestContext>) {
        router.post("api/v1/admin/environments", use: createEnvironment)
    }

    /// Creates an environment (and its organization and project when missing); idempotent.
    @Sendable func createEnvironment(_ request: Request, context: APIRequestContext) async throws -> Response {
        try authorize(request)
        let fields = Fields(try await request.jsonObject(limit: Self.bodyLimit))
        let typeName = try fields.string("type", length: 1...16) ?? "development"
        guard let type = EnvironmentType(rawValue: typeName.uppercased()) else {
            throw APIError(.badRequest, "type must be one of development, staging, production, preview")
        }
        let organization = try Tenancy.slug(fields.requiredString("organization", length: 1...64), "organization")
        let project = try Tenancy.slug(fields.requiredString("project", length: 1...64), "project")
        let slug = try Tenancy.slug(fields.string("slug", length: 1...64) ?? type.rawValue.lowercased(), "slug")
        let created = try await tenancy.createEnvironment(
            organization: organization,
            project: project,
            type: type,
            slug: slug
        )
        return try .json(created, status: .ok)
    }

    private func authorize(_ request: Request) throws {
        guard let adminToken else {
            throw APIError(.forbidden, "The admin API is off; set SESSIONS_ADMIN_TOKEN on the control plane")
        }
        guard let token = request.bearerToken, constantTimeEqual(token, adminToken) else {
            throw APIError(.unauthorized, "Invalid admin token")
        }
    }
}
