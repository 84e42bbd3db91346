-- 0005_fairness_and_queue_configs: fair shares and queue limits (issue 16).
--
-- jobs.fairness_key: the job's tenant, as enqueued (NULL when it has none).
-- queue_configs: every queue's settings as the replicated state machine holds
-- them after updated_slot; the leader's writer replaces the table's rows in the
-- same transaction as the jobs whenever a QueueConfig command was applied. A
-- queue whose settings were all cleared has no row.

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
