-- The named queries of dpq/pg, procrastinate-style: each starts with a line
-- "-- name --", then comment lines describing it, then the statement.
-- dpq.pg.queries loads them as QUERIES["name"]. %s and %(name)s are psycopg
-- placeholders.

-- lock_cluster --
-- Take the cluster row's lock for the rest of the transaction, so writers
-- take turns, and read how far the log has been written.
SELECT applied_slot FROM dpq_cluster WHERE id = 1 FOR UPDATE;

-- max_job_id --
-- The highest job id in the table. Job ids are handed out in log order and
-- never reused, so a job with a higher id has never been written: it can be
-- copied straight in. (Run after lock_cluster: no other writer is adding rows.)
SELECT coalesce(max(job_id), 0) FROM jobs;

-- create_stage --
-- The session's staging table for jobs that may already have a row.
CREATE TEMP TABLE IF NOT EXISTS dpq_stage (LIKE jobs) ON COMMIT DELETE ROWS;

-- copy_jobs --
-- Binary COPY of new rows straight into jobs; the column order is the one
-- dpq.pg.writer encodes (fixed-width columns first).
COPY jobs (job_id, priority, created_at, attempts, owner_node, deliver_after, updated_slot,
           lease_expires_at, payload, queue, state, consumer_id, last_error, fairness_key)
FROM STDIN (FORMAT BINARY);

-- copy_stage --
-- The same rows, into the staging table.
COPY dpq_stage (job_id, priority, created_at, attempts, owner_node, deliver_after, updated_slot,
                lease_expires_at, payload, queue, state, consumer_id, last_error, fairness_key)
FROM STDIN (FORMAT BINARY);

-- upsert_from_stage --
-- Staged rows into jobs; an existing row changes only for a newer slot.
INSERT INTO jobs (job_id, priority, payload, created_at, queue, state, attempts, owner_node,
                  deliver_after, lease_expires_at, consumer_id, updated_slot, last_error,
                  fairness_key)
SELECT job_id, priority, payload, created_at, queue, state, attempts, owner_node,
       deliver_after, lease_expires_at, consumer_id, updated_slot, last_error, fairness_key
FROM dpq_stage
ON CONFLICT (job_id) DO UPDATE SET
    priority = EXCLUDED.priority,
    payload = EXCLUDED.payload,
    created_at = EXCLUDED.created_at,
    queue = EXCLUDED.queue,
    state = EXCLUDED.state,
    attempts = EXCLUDED.attempts,
    owner_node = EXCLUDED.owner_node,
    deliver_after = EXCLUDED.deliver_after,
    lease_expires_at = EXCLUDED.lease_expires_at,
    consumer_id = EXCLUDED.consumer_id,
    updated_slot = EXCLUDED.updated_slot,
    last_error = EXCLUDED.last_error,
    fairness_key = EXCLUDED.fairness_key
WHERE jobs.updated_slot < EXCLUDED.updated_slot;

-- delete_jobs --
-- Acked jobs leave the table. Job ids are never reused, so a delete is final.
DELETE FROM jobs WHERE job_id = ANY(%s::bigint[]);

-- advance_applied_slot --
-- Record the batch's slot; never moves it backwards.
UPDATE dpq_cluster SET applied_slot = %(slot)s WHERE id = 1 AND applied_slot < %(slot)s;

-- clear_queue_configs --
-- The settings are few: the writer replaces them whole.
DELETE FROM queue_configs;

-- insert_queue_config --
INSERT INTO queue_configs (queue, max_in_flight, max_rate_per_s, burst, fairness_weights,
                           default_fairness_weight, max_attempts, updated_slot)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s);

-- load_queue_configs --
SELECT queue, max_in_flight, max_rate_per_s, burst, fairness_weights, default_fairness_weight,
       max_attempts, updated_slot
FROM queue_configs
ORDER BY queue;

-- clear_schedules --
-- Schedules are few: the writer replaces them whole.
DELETE FROM schedules;

-- insert_schedule --
INSERT INTO schedules (name, queue, priority, payload, cron, every_ms, start_at, jitter_ms,
                       fairness_key, created_at, version, updated_slot)
VALUES (%s, %s, %s, %s, nullif(%s, ''), nullif(%s, 0),
        timestamptz 'epoch' + %s * interval '1 microsecond', %s, nullif(%s, ''),
        timestamptz 'epoch' + %s * interval '1 microsecond', %s, %s);

-- load_schedules --
SELECT name, queue, priority, payload, cron, every_ms, start_at, jitter_ms, fairness_key,
       created_at, version, updated_slot
FROM schedules
ORDER BY name;

-- applied_slot --
-- How far the log has been written.
SELECT applied_slot FROM dpq_cluster WHERE id = 1;

-- load_jobs --
-- Every job, as the state machine holds it (times as timestamptz, loaded as
-- microseconds by dpq.pg.writer).
SELECT job_id, queue, priority, payload, created_at, deliver_after, owner_node, attempts,
       state::text, lease_expires_at, consumer_id, last_error, fairness_key
FROM jobs
ORDER BY job_id;

-- list_ready_jobs --
-- For operators: the ready jobs of a queue, most urgent and oldest first
-- (served by jobs_ready_idx). Delayed jobs are included; see deliver_after.
SELECT job_id, priority, created_at, deliver_after, attempts, owner_node, length(payload) AS payload_bytes
FROM jobs
WHERE queue = %(queue)s AND state = 'ready'
ORDER BY priority, created_at, job_id
LIMIT %(limit)s;

-- claim_cluster_id --
-- A cluster's first start: every node offers an id, the first insert wins
-- (dpq/node/identity.py reads the winner back with cluster_id).
INSERT INTO dpq_cluster_identity (id, cluster_id) VALUES (1, %s) ON CONFLICT (id) DO NOTHING;

-- cluster_id --
-- The id of the cluster that owns this database.
SELECT cluster_id FROM dpq_cluster_identity WHERE id = 1;

-- record_member --
-- A node whose data folder holds the cluster identity, before it votes.
INSERT INTO dpq_cluster_members (node_id) VALUES (%s) ON CONFLICT (node_id) DO NOTHING;

-- member_joined --
-- Whether a node id has ever joined this cluster.
SELECT 1 FROM dpq_cluster_members WHERE node_id = %s;
