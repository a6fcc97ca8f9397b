import Postgres

/// The control plane's tables. Each migration is fixed once released; changes are new versions.
enum ControlPlaneSchema {
    static let migrator = PostgresMigrator(
        component: "control-plane",
        migrations: [
            PostgresMigration(
                version: 1,
                name: "tenancy",
                sql: """
                    CREATE TABLE organizations (
                        id text PRIMARY KEY,
                        slug text NOT NULL UNIQUE,
                        created_at timestamptz(3) NOT NULL DEFAULT now()
                    );
                    CREATE TABLE projects (
                        id text PRIMARY KEY,
                        organization_id text NOT NULL REFERENCES organizations (id),
                        slug text NOT NULL,
                        created_at timestamptz(3) NOT NULL DEFAULT now(),
                        UNIQUE (organization_id, slug)
                    );
                    CREATE TABLE runtime_environments (
                        id text PRIMARY KEY,
                        organization_id text NOT NULL REFERENCES organizations (id),
                        project_id text NOT NULL REFERENCES projects (id),
                        type text NOT NULL CHECK (type IN ('DEVELOPMENT', 'STAGING', 'PRODUCTION', 'PREVIEW')),
                        slug text NOT NULL,
                        api_key text NOT NULL UNIQUE,
                        created_at timestamptz(3) NOT NULL DEFAULT now(),
                        UNIQUE (project_id, slug)
                    );
                    """
            )
        ]
    )
}
