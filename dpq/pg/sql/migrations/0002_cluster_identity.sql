-- 0002_cluster_identity: which cluster this database belongs to.
--
-- Written once, when a cluster first starts: every node races to insert a
-- random id (INSERT … ON CONFLICT DO NOTHING) and adopts the one that won
-- (dpq/node/identity.py). A node whose data folder names another cluster
-- refuses to start against this database.

CREATE TABLE dpq_cluster_identity (
    id         INT PRIMARY KEY DEFAULT 1 CONSTRAINT single_row CHECK (id = 1),
    cluster_id TEXT NOT NULL CONSTRAINT cluster_id_is_128_bit_hex
                   CHECK (cluster_id ~ '^[0-9a-f]{32}$'),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

COMMENT ON TABLE dpq_cluster_identity IS
    'One row: the id of the dpq cluster that owns this database, kept in every node''s data folder too.';
