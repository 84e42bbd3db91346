-- 0003_cluster_members: the nodes that have ever joined this cluster.
--
-- A node records its id here once its data folder holds the cluster identity,
-- before it takes part in Paxos (dpq/node/identity.py). A node that later finds
-- its data folder empty while its id is here lost its disk: it may have voted,
-- so it must not vote again from amnesia and starts only with --rejoin, as a
-- non-voting learner (dpq/paxos/core.py, "A replica that lost its disk").

CREATE TABLE dpq_cluster_members (
    node_id   BIGINT PRIMARY KEY CONSTRAINT node_id_not_negative CHECK (node_id >= 0),
    joined_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

COMMENT ON TABLE dpq_cluster_members IS
    'Node ids that have joined the dpq cluster (an empty data folder for one of them means a lost disk).';
