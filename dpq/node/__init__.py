"""``dpq-node``, the leader/follower process: one replica of the Multi-Paxos log and its queue.

A node is a list of services started and stopped together (``node.py``) on two
planes (``planes.py``: the client port and the peer port). ``driver.py`` runs
the pure Paxos replica of :mod:`dpq.paxos` on the event loop, ``transport.py``
and ``wire.py`` carry its messages to the peers, ``identity.py`` proves which
cluster a node belongs to, and committed slots are applied to the queue state
machine of :mod:`dpq.queue`. ``operations.py`` is what the node does for each
public RPC, ``dispatcher.py`` serves long-polls from the jobs this node owns,
``leader.py`` the leader's duties (the PostgreSQL writer, moving a dead node's
jobs), ``stealer.py`` work stealing, ``health.py`` the live health the gateway
balances on, ``snapshotter.py`` snapshots, ``config.py`` the flags and TOML keys.
"""
