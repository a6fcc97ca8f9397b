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
                        -- Keys are looked up by their hash, then compared in constant time.
                        api_key_hash text NOT NULL UNIQUE,
                        created_at timestamptz(3) NOT NULL DEFAULT now(),
                        UNIQUE (project_id, slug)
                    );
                    """
            ),
            PostgresMigration(
                version: 2,
                name: "sessions",
                sql: """
                    CREATE TABLE sessions (
                        id text PRIMARY KEY,
                        friendly_id text NOT NULL UNIQUE,
                        external_id text,
                        type text NOT NULL,
                        task_identifier text,
                        tags text[] NOT NULL DEFAULT '{}',
                        metadata jsonb,
                        trigger_config jsonb,
                        organization_id text NOT NULL,
                        project_id text NOT NULL,
                        runtime_environment_id text NOT NULL,
                        environment_type text NOT NULL,
                        closed_at timestamptz(3),
                        closed_reason text,
                        expires_at timestamptz(3),
                        created_at timestamptz(3) NOT NULL DEFAULT now(),
                        updated_at timestamptz(3) NOT NULL DEFAULT now(),
                        UNIQUE (runtime_environment_id, external_id)
                    );
                    CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
                    -- Logical replication to ClickHouse needs whole old rows on UPDATE and DELETE.
                    ALTER TABLE sessions REPLICA IDENTITY FULL;
                    """
            ),
            PostgresMigration(
                version: 3,
                name: "session events outbox",
                sql: """
                    -- Each session write records its lifecycle event here in the same statement;
                    -- the relay publishes the rows to JetStream in order, then deletes them.
                    CREATE TABLE session_events_outbox (
                        id bigserial PRIMARY KEY,
                        kind text NOT NULL CHECK (kind IN ('created', 'updated', 'closed')),
                        session_row jsonb NOT NULL,
                        created_at timestamptz NOT NULL DEFAULT now()
                    );
                    """
            ),
            PostgresMigration(
                version: 4,
                name: "previous externalId in session events",
                sql: """
                    -- An update that renames a session records the old name, so the durable
                    -- event tells caches to forget it too.
                    ALTER TABLE session_events_outbox ADD COLUMN previous_external_id text;
                    """
            ),
            PostgresMigration(
                version: 5,
                name: "session events set aside",
                sql: """
                    -- Outbox rows the relay cannot turn into an event (a row it cannot read),
                    -- moved here with the reason instead of holding back the rows behind them.
                    CREATE TABLE session_events_failed (
                        id bigint PRIMARY KEY,
                        kind text NOT NULL,
                        session_row jsonb NOT NULL,
                        previous_external_id text,
                        error text NOT NULL,
                        created_at timestamptz NOT NULL,
                        failed_at timestamptz NOT NULL DEFAULT now()
                    );
                    """
            ),
        ]
    )
}
