import Logging

/// One schema change, identified by its version. Versions are applied in ascending order and
/// never edited once released; a change is a new migration.
public struct PostgresMigration: Sendable {
    public var version: Int
    public var name: String
    public var sql: StaticString

    public init(version: Int, name: String, sql: StaticString) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

/// Applies a component's migrations at start-up, each exactly once, recorded in `schema_migrations`.
///
/// Several components share one database (each owns its tables), so records are keyed by
/// component. An advisory lock serialises instances that start at the same time.
public struct PostgresMigrator: Sendable {
    public var component: String
    public var migrations: [PostgresMigration]

    public init(component: String, migrations: [PostgresMigration]) {
        precondition(
            zip(migrations, migrations.dropFirst()).allSatisfy { $0.version < $1.version },
            "migration versions must be strictly increasing"
        )
        self.component = component
        self.migrations = migrations
    }

    /// Applies the missing migrations in one transaction and returns the versions it applied.
    @discardableResult
    public func run(on client: PostgresClient, logger: Logger) async throws -> [Int] {
        try await client.withTransaction { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(7305001)")
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    component text NOT NULL,
                    version integer NOT NULL,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (component, version)
                )
                """
            )
            let applied = try await connection.query(
                "SELECT version FROM schema_migrations WHERE component = \(component)"
            ).map { try $0.decode("version", as: Int.self) }
            var done: [Int] = []
            for migration in migrations where !applied.contains(migration.version) {
                try await connection.execute(script: migration.sql.description)
                try await connection.query(
                    """
                    INSERT INTO schema_migrations (component, version, name)
                    VALUES (\(component), \(migration.version), \(migration.name))
                    """
                )
                logger.debug(
                    "Applied a migration.",
                    metadata: ["pg.migration": "\(migration.version) \(migration.name)", "component": "\(component)"]
                )
                done.append(migration.version)
            }
            return done
        }
    }
}
