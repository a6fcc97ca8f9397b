import ArgumentParser
import Contracts
import Foundation
import ServiceKit

struct EnvironmentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "env",
        abstract: "Manage environments.",
        subcommands: [CreateEnvironment.self]
    )
}

struct CreateEnvironment: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create an environment (and its organization and project when missing) and print its API key.",
        discussion: """
            Needs the operator's admin token (--admin-token or $SESSIONS_ADMIN_TOKEN, the control plane's \
            SESSIONS_ADMIN_TOKEN). Running it again with the same names prints the same key. Prints \
            `export` lines, so `eval "$(sessionsctl env create …)"` sets up the shell.
            """
    )

    @OptionGroup var api: APIOptions
    @Option(help: "The operator's admin token (default: $SESSIONS_ADMIN_TOKEN).") var adminToken: String?
    @Option(help: "Organization slug.") var organization: String
    @Option(help: "Project slug.") var project: String
    @Option(help: "Environment type: development, staging, production or preview.") var type = "development"
    @Option(help: "Environment slug (default: the type).") var slug: String?

    struct Created: Decodable {
        var organizationId: String
        var projectId: String
        var environmentId: String
        var type: String
        var apiKey: String
    }

    func run() async throws {
        try await reporting {
            let token = adminToken ?? ProcessInfo.processInfo.environment["SESSIONS_ADMIN_TOKEN"]
            guard let token, !token.isEmpty else {
                throw CLIError(.usage, "no admin token: pass --admin-token or set SESSIONS_ADMIN_TOKEN")
            }
            let client = try api.client(requiresKey: false)
            var body: [String: JSONValue] = [
                "organization": .string(organization), "project": .string(project), "type": .string(type),
            ]
            if let slug { body["slug"] = .string(slug) }
            let (created, raw) = try await client.json(
                Created.self,
                "POST",
                "/api/v1/admin/environments",
                body: JSONValue.object(body),
                bearer: token
            )
            if api.json { return say(String(decoding: raw, as: UTF8.self)) }
            note("environment \(created.environmentId) (\(created.type)) in \(organization)/\(project)")
            say("export SESSIONS_URL=\(client.baseURL)")
            say("export SESSIONS_API_KEY=\(created.apiKey)")
            say("export SESSIONS_ENV_ID=\(created.environmentId)")
        }
    }
}

struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mint a public access token (a JWT signed with the secret key) limited to some scopes.",
        discussion: """
            Scopes are {read|write|admin}:{sessions|tasks}[:{id}], or read:all, write:all, admin:all, admin. \
            Example: sessionsctl token --scope read:sessions:chat-42 --expires-in 15m. Needs the environment id \
            (--env-id or $SESSIONS_ENV_ID, printed by `env create`) and a secret key; SESSIONS_JWT_ISSUER and \
            SESSIONS_JWT_AUDIENCE when the control plane sets its own.
            """
    )

    @OptionGroup var api: APIOptions
    @Option(help: "A scope the token grants (repeat for more).") var scope: [String]
    @Option(help: "How long it is valid: 30s, 15m, 1h, 1d… (default 1h).") var expiresIn = "1h"
    @Option(help: "The environment id (default: $SESSIONS_ENV_ID).") var envId: String?

    func validate() throws {
        guard !scope.isEmpty else { throw ValidationError("give at least one --scope") }
        let pattern = /(read|write|admin):(sessions|tasks)(:.+)?|read:all|write:all|admin:all|admin/
        for scope in scope where (try? pattern.wholeMatch(in: scope)) == nil {
            throw ValidationError("\(scope) is not a scope; see --help")
        }
        guard DurationText.seconds(expiresIn) != nil else {
            throw ValidationError("--expires-in must look like 30s, 15m, 1h or 1d")
        }
    }

    func run() async throws {
        try await reporting {
            let environment = ProcessInfo.processInfo.environment
            guard let key = api.apiKey ?? environment["SESSIONS_API_KEY"], key.hasPrefix("tr_"),
                key.utf8.count >= AccessTokens.minimumKeyBytes
            else {
                throw CLIError(
                    .usage,
                    "minting needs the environment's secret key (tr_…, at least \(AccessTokens.minimumKeyBytes) "
                        + "characters): --api-key or SESSIONS_API_KEY"
                )
            }
            guard let environmentId = envId ?? environment["SESSIONS_ENV_ID"], !environmentId.isEmpty else {
                throw CLIError(.usage, "no environment id: pass --env-id or set SESSIONS_ENV_ID")
            }
            let seconds = Int64(DurationText.seconds(expiresIn) ?? 3600)
            let token = try await AccessTokens.mint(
                environmentId: environmentId,
                secretKey: key,
                scopes: scope,
                lifetime: .seconds(seconds),
                settings: AccessTokenSettings(
                    issuer: environment["SESSIONS_JWT_ISSUER"] ?? AccessTokenSettings().issuer,
                    audience: environment["SESSIONS_JWT_AUDIENCE"] ?? AccessTokenSettings().audience
                )
            )
            if api.json {
                let expiresAt = ISO8601.string(from: Date().addingTimeInterval(Double(seconds)))
                let object = JSONValue.object([
                    "token": .string(token), "scopes": .array(scope.map(JSONValue.string)),
                    "expiresAt": .string(expiresAt),
                ])
                say(String(decoding: try JSONEncoder.sessions.encode(object), as: UTF8.self))
            } else {
                say(token)
            }
        }
    }
}
