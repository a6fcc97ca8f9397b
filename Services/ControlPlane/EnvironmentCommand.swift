import ArgumentParser
import Contracts
import Foundation
import Logging
import Postgres
import ServiceKit

/// `control-plane env …`: tenancy administration.
struct EnvironmentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "env",
        abstract: "Manage environments and their API keys.",
        subcommands: [CreateEnvironment.self]
    )
}

extension EnvironmentType: ExpressibleByArgument {
    public init?(argument: String) { self.init(rawValue: argument.uppercased()) }

    public static var allValueStrings: [String] { allCases.map { $0.rawValue.lowercased() } }

    /// The prefix of the environment's secret keys.
    var keyPrefix: String {
        switch self {
        case .development: "tr_dev_"
        case .staging: "tr_stg_"
        case .production: "tr_prod_"
        case .preview: "tr_prev_"
        }
    }
}

/// What `env create` prints: one JSON line.
struct CreatedEnvironment: Codable, Equatable, Sendable {
    var organizationId: String
    var projectId: String
    var environmentId: String
    var type: String
    var apiKey: String
}

struct CreateEnvironment: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create an environment (and its organization and project when missing) and print its API key.",
        discussion: """
            Idempotent: running it again with the same names prints the same ids and key.
            Reads SESSIONS_DATABASE_URL and applies the control plane's migrations first.
            """
    )

    @Option(help: "Organization slug.") var organization: String
    @Option(help: "Project slug.") var project: String
    @Option(help: "Environment type: \(EnvironmentType.allValueStrings.joined(separator: ", ")).")
    var type: EnvironmentType = .development
    @Option(help: "Environment slug (default: the type).") var slug: String?

    func validate() throws {
        do {
            for (name, value) in [
                ("--organization", organization), ("--project", project),
                ("--slug", slug ?? type.rawValue.lowercased()),
            ] { _ = try Tenancy.slug(value, name) }
        } catch let error as APIError {
            throw ValidationError(error.message)
        }
    }

    func run() async throws {
        let logger = Logger(label: "control-plane.env")
        let database = PostgresClient(
            configuration: .init(url: Environment().databaseURL, poolSize: 1)
        )
        do {
            try await ControlPlaneSchema.migrator.run(on: database, logger: logger)
            let created = try await Tenancy(database: database).createEnvironment(
                organization: organization,
                project: project,
                type: type,
                slug: slug ?? type.rawValue.lowercased()
            )
            await database.close()
            FileHandle.standardOutput.write(try JSONEncoder.sessions.encode(created) + Data("\n".utf8))
        } catch let error as PostgresError {
            await database.close()
            throw ValidationError("the database refused: \(error.message)")
        } catch let error as APIError {
            await database.close()
            throw ValidationError(error.message)
        }
    }
}

/// Organizations, projects and environments.
struct Tenancy {
    let database: PostgresClient

    /// `value` when it is a valid organization, project or environment slug.
    static func slug(_ value: String, _ name: String) throws -> String {
        guard (1...64).contains(value.count),
            value.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
        else { throw APIError(.badRequest, "\(name) must be 1-64 letters, digits, '-' or '_'") }
        return value
    }

    /// Creates whatever is missing along organization → project → environment and returns the
    /// environment with its key. Concurrent calls agree (each step is an atomic upsert).
    ///
    /// - Throws: ``APIError`` 409 when the slug names an environment of another type.
    func createEnvironment(
        organization: String,
        project: String,
        type: EnvironmentType,
        slug: String
    ) async throws
        -> CreatedEnvironment
    {
        let apiKey = type.keyPrefix + Identifier.secret(length: 32)
        return try await database.withTransaction { connection in
            let organizationId = try await connection.query(
                """
                INSERT INTO organizations (id, slug) VALUES (\(Identifier.make()), \(organization))
                ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug
                RETURNING id
                """
            )[0].decode("id", as: String.self)
            let projectId = try await connection.query(
                """
                INSERT INTO projects (id, organization_id, slug) VALUES (\(Identifier.make()), \(organizationId), \(project))
                ON CONFLICT (organization_id, slug) DO UPDATE SET slug = EXCLUDED.slug
                RETURNING id
                """
            )[0].decode("id", as: String.self)
            let environment = try await connection.query(
                """
                INSERT INTO runtime_environments (id, organization_id, project_id, type, slug, api_key, api_key_hash)
                VALUES (\(Identifier.make()), \(organizationId), \(projectId), \(type.rawValue), \(slug),
                        \(apiKey), encode(sha256(convert_to(\(apiKey), 'UTF8')), 'hex'))
                ON CONFLICT (project_id, slug) DO UPDATE SET slug = EXCLUDED.slug
                RETURNING id, type, api_key
                """
            )[0]
            let existingType: String = try environment.decode("type")
            guard existingType == type.rawValue else {
                throw APIError(
                    .conflict,
                    "Environment \(slug) of project \(project) is \(existingType.lowercased()), not \(type.rawValue.lowercased()); give another slug"
                )
            }
            return CreatedEnvironment(
                organizationId: organizationId,
                projectId: projectId,
                environmentId: try environment.decode("id"),
                type: try environment.decode("type"),
                apiKey: try environment.decode("api_key")
            )
        }
    }
}
