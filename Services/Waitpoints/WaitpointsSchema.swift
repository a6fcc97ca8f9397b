import Postgres

/// The waitpoints service's tables. Each migration is fixed once released; changes are new versions.
enum WaitpointsSchema {
    static let migrator = PostgresMigrator(
        component: "waitpoints",
        migrations: [
            PostgresMigration(
                version: 1,
                name: "waitpoints",
                sql: """
                    CREATE TABLE waitpoints (
                        id text PRIMARY KEY,
                        friendly_id text NOT NULL UNIQUE,
                        environment_id text NOT NULL,
                        organization_id text NOT NULL,
                        project_id text NOT NULL,
                        run_id text NOT NULL,
                        session_friendly_id text NOT NULL,
                        io text NOT NULL CHECK (io IN ('out', 'in')),
                        status text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'COMPLETED', 'TIMED_OUT')),
                        -- Records with this sequence number or later complete it.
                        from_seq_num bigint NOT NULL,
                        output jsonb,
                        timeout_at timestamptz(3),
                        idempotency_key text,
                        idempotency_key_expires_at timestamptz(3),
                        tags text[] NOT NULL DEFAULT '{}',
                        created_at timestamptz(3) NOT NULL DEFAULT now(),
                        completed_at timestamptz(3),
                        -- Set once its event is on JetStream.
                        published_at timestamptz(3)
                    );
                    CREATE UNIQUE INDEX waitpoints_idempotency ON waitpoints (environment_id, idempotency_key)
                        WHERE idempotency_key IS NOT NULL;
                    CREATE INDEX waitpoints_pending_channel ON waitpoints (environment_id, session_friendly_id, io)
                        WHERE status = 'PENDING';
                    CREATE INDEX waitpoints_due ON waitpoints (timeout_at) WHERE status = 'PENDING';
                    CREATE INDEX waitpoints_unpublished ON waitpoints (completed_at)
                        WHERE status <> 'PENDING' AND published_at IS NULL;
                    """
            ),
            PostgresMigration(
                version: 2,
                name: "unregistered waitpoints",
                sql: """
                    -- Set when a waiter could not be put in the Redis registry; the sweeper registers it.
                    ALTER TABLE waitpoints ADD COLUMN unregistered boolean NOT NULL DEFAULT false;
                    CREATE INDEX waitpoints_unregistered ON waitpoints (created_at)
                        WHERE status = 'PENDING' AND unregistered;
                    """
            ),
            PostgresMigration(
                version: 3,
                name: "due waitpoints index only for the sweeper",
                sql: """
                    -- The index also matched every statement on pending waitpoints; with statistics
                    -- that lag behind the pending set, the planner read all pending waitpoints
                    -- through it instead of one channel's through waitpoints_pending_channel.
                    DROP INDEX waitpoints_due;
                    CREATE INDEX waitpoints_due ON waitpoints (timeout_at)
                        WHERE status = 'PENDING' AND timeout_at IS NOT NULL;
                    """
            ),
            PostgresMigration(
                version: 4,
                name: "waitpoint output as JSON text",
                sql: """
                    -- A record may hold U+0000, which jsonb refuses (PostgreSQL text cannot hold it):
                    -- the output is kept as the JSON text it was written as, where it is an escape.
                    ALTER TABLE waitpoints ALTER COLUMN output TYPE text USING output::text;
                    """
            ),
        ]
    )
}
