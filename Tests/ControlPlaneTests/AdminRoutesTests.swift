import Contracts
import Foundation
import HTTPTypes
import ServiceKit
import TestSupport
import Testing

@testable import ControlPlane

@Suite(.timeLimit(.minutes(2))) struct AdminRoutesTests {
    @Test func createsAnEnvironmentOnceAndItsKeyWorks() async throws {
        try await withControlPlane { api, _, _, _ in
            let organization = TestServers.uniqueName("org")
            let body = #"{"organization":"\#(organization)","project":"web","type":"production"}"#
            let first = try await api.call(.post, "/api/v1/admin/environments", token: adminToken, json: body)
            #expect(first.status == 200, "\(first.body)")
            let created = try first.json(CreatedEnvironment.self)
            #expect(created.apiKey.hasPrefix("tr_prod_"))
            #expect(created.type == "PRODUCTION")
            let again = try await api.call(.post, "/api/v1/admin/environments", token: adminToken, json: body)
            #expect(try again.json(CreatedEnvironment.self) == created, "idempotent: the same ids and key")
            let sessions = try await api.call(.get, "/api/v1/sessions?page[size]=1", token: created.apiKey)
            #expect(sessions.status != 401, "the new key authenticates")
            let otherType =
                #"{"organization":"\#(organization)","project":"web","type":"development","slug":"production"}"#
            let conflict = try await api.call(.post, "/api/v1/admin/environments", token: adminToken, json: otherType)
            #expect(conflict.status == 409, "a slug taken by another type is not handed out as this one")
            #expect(conflict.error?.contains("is production, not development") == true, "\(conflict.body)")
        }
    }

    @Test func rejectsWrongTokensAndBadFields() async throws {
        try await withControlPlane { api, tenants, _, _ in
            let body = #"{"organization":"o","project":"p"}"#
            for token in [nil, "wrong-token-0123456789", tenants.a.apiKey] {
                let response = try await api.call(.post, "/api/v1/admin/environments", token: token, json: body)
                #expect(response.status == 401, "token \(token ?? "none")")
                #expect(response.error == "Invalid admin token")
            }
            let cases: [(String, String)] = [
                (#"{"project":"p"}"#, "organization"),
                (#"{"organization":"o","project":"p q"}"#, "project must be"),
                (#"{"organization":"o","project":"p","type":"qa"}"#, "type must be one of"),
                (#"{"organization":"o","project":"p","slug":"ü"}"#, "slug must be"),
                ("[1]", "JSON object"),
            ]
            for (json, message) in cases {
                let response = try await api.call(.post, "/api/v1/admin/environments", token: adminToken, json: json)
                #expect(response.status == 400, "\(json)")
                #expect(response.error?.contains(message) == true, "\(json): \(response.error ?? response.body)")
            }
        }
    }
}
