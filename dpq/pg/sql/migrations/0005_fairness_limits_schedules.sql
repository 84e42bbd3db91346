-- 0005_fairness_limits_schedules: fair shares, queue limits, periodic jobs (issue 16).
--
-- jobs.fairness_key: the job's tenant, as enqueued (NULL when it has none).
-- queue_configs: every queue's settings as the replicated state machine holds
-- them after updated_slot; the leader's writer replaces the table's rows in the
-- same transaction as the jobs whenever a QueueConfig command was applied. A
-- queue whose settings were all cleared has no row.
-- schedules: every periodic job's definition, replaced the same way after a
-- CreateSchedule or DeleteSchedule (when each tick fires is the log's business).

ALTER TABLE jobs ADD COLUMN fairness_key TEXT;

COMMENT ON COLUMN jobs.fairness_key IS
    'The job''s tenant: within a queue and priority, tenants take turns by weight.';

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
