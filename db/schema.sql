-- dpq's PostgreSQL schema after every migration of dpq/pg/sql/migrations/,
-- for reading (tests/pg/test_migrate.py keeps the two identical).
-- Only the current leader's batched writer (dpq/pg/writer.py) writes these tables.

-- Created by dpq.pg.migrate itself: one row per applied migration file.
CREATE TABLE dpq_migrations (
    name       TEXT PRIMARY KEY,
    sha256     TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TYPE dpq_job_state AS ENUM ('ready', 'leased', 'dead');

-- Every job not yet acked, as of dpq_cluster.applied_slot. Job ids come from the
-- replicated state machine and are inserted explicitly; the BIGSERIAL default is
-- the seed's, and a row inserted by hand with it is not part of the queue.
CREATE TABLE jobs (
    -- the seed's columns, kept as they were
    job_id           BIGSERIAL PRIMARY KEY,
    priority         INT CONSTRAINT priority_in_range CHECK (priority BETWEEN 1 AND 5),
    payload          BYTEA,
    created_at       TIMESTAMPTZ DEFAULT now(),
    -- the replicated queue's view of the job
    queue            TEXT NOT NULL DEFAULT 'default',
    state            dpq_job_state NOT NULL DEFAULT 'ready',
    attempts         INT NOT NULL DEFAULT 0,      -- deliveries so far (the lease token's attempt)
    owner_node       INT,                         -- the node that serves the job
    deliver_after    TIMESTAMPTZ,                 -- when it is (or was) due
    lease_expires_at TIMESTAMPTZ,                 -- set while leased
    consumer_id      TEXT,                        -- set while leased
    updated_slot     BIGINT NOT NULL,             -- the log slot this row reflects
    CONSTRAINT queue_not_empty CHECK (queue <> ''),
    CONSTRAINT attempts_not_negative CHECK (attempts >= 0),
    last_error       TEXT,                        -- the last nack's error (0004)
    fairness_key     TEXT                         -- the job's tenant (0005)
);

COMMENT ON TABLE jobs IS
    'Every job not yet acked, as of dpq_cluster.applied_slot; acked jobs are deleted. Written only by the dpq leader.';
COMMENT ON COLUMN jobs.deliver_after IS
    'When the job is (or was) due: created_at, or later for a delayed or nacked job.';
COMMENT ON COLUMN jobs.updated_slot IS
    'The replicated-log slot this row reflects; a write for an older slot never overwrites it.';
COMMENT ON COLUMN jobs.last_error IS
    'The error of the job''s last nack (or "lease expired"); NULL when it never failed.';
COMMENT ON COLUMN jobs.fairness_key IS
    'The job''s tenant: within a queue and priority, tenants take turns by weight.';

-- An operator listing the ready jobs of a queue, most urgent and oldest first.
CREATE INDEX jobs_ready_idx ON jobs (queue, priority, created_at, job_id)
    WHERE state = 'ready';

-- One row: how far the log has been written.
CREATE TABLE dpq_cluster (
    id           INT PRIMARY KEY DEFAULT 1 CONSTRAINT single_row CHECK (id = 1),
    applied_slot BIGINT NOT NULL CONSTRAINT applied_slot_not_negative CHECK (applied_slot >= 0)
);

COMMENT ON TABLE dpq_cluster IS
    'One row: the last log slot whose changes are all in jobs, written in the same transaction as them.';

INSERT INTO dpq_cluster (id, applied_slot) VALUES (1, 0);

-- One row: the cluster that owns this database (dpq/node/identity.py).
CREATE TABLE dpq_cluster_identity (
    id         INT PRIMARY KEY DEFAULT 1 CONSTRAINT single_row CHECK (id = 1),
    cluster_id TEXT NOT NULL CONSTRAINT cluster_id_is_128_bit_hex
                   CHECK (cluster_id ~ '^[0-9a-f]{32}$'),  -- 128 random bits
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

COMMENT ON TABLE dpq_cluster_identity IS
    'One row: the id of the dpq cluster that owns this database, kept in every node''s data folder too.';

-- The nodes that have ever joined this cluster (dpq/node/identity.py): an empty
-- data folder for one of them is a lost disk, so it starts only with --rejoin.
CREATE TABLE dpq_cluster_members (
    node_id   BIGINT PRIMARY KEY CONSTRAINT node_id_not_negative CHECK (node_id >= 0),
    joined_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

COMMENT ON TABLE dpq_cluster_members IS
    'Node ids that have joined the dpq cluster (an empty data folder for one of them means a lost disk).';

-- Every queue's settings (SetQueueConfig) as of updated_slot, replaced whole by
-- the writer when one changes; 0 means not set. A queue with none has no row.
CREATE TABLE queue_configs (
    queue                   TEXT PRIMARY KEY,
    max_in_flight           INTEGER NOT NULL,
    max_rate_per_s          DOUBLE PRECISION NOT NULL,
    burst                   INTEGER NOT NULL,
    fairness_weights        JSONB NOT NULL,
    default_fairness_weight INTEGER NOT NULL,
    max_attempts            INTEGER NOT NULL,
    updated_slot            BIGINT NOT NULL
);

COMMENT ON TABLE queue_configs IS
    'SetQueueConfig as applied by the replicated log; 0 means not set (no limit, the default).';

-- Every periodic job's definition (CreateSchedule) as of updated_slot, replaced whole
-- by the writer when one is created or deleted; its ticks live in the log.
CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    queue        TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    payload      BYTEA NOT NULL,
    cron         TEXT,              -- 5 fields, UTC; NULL with every_ms
    every_ms     BIGINT,            -- NULL with cron
    start_at     TIMESTAMPTZ NOT NULL,
    jitter_ms    INTEGER NOT NULL,
    fairness_key TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    version      BIGINT NOT NULL,   -- the log slot that created it
    updated_slot BIGINT NOT NULL
);

COMMENT ON TABLE schedules IS
    'CreateSchedule as applied by the replicated log: what each periodic job enqueues, and when.';
