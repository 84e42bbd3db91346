"""What the core tells a node's health check (dpq.node.readiness): whether a live
leader is known (``in_lease``) and the highest commit a leader announced
(``leader_commit``), which a follower missing slots may not hold yet."""

from support.paxos_cluster import Cluster, prop


def test_a_follower_missing_slots_knows_the_leaders_commit_beyond_its_own():
    c = Cluster(3, max_inflight_slots=1, max_entries_per_message=1)  # 1 slot/Accept
    c.elect(1)
    for n in range(1, 6):
        c.nodes[1].propose(prop(n))
    # Node 3 hears nothing of the proposals: nodes 1 and 2 commit them.
    c.deliver(drop=lambda m: m.dst == 3 or m.src == 3)
    head = c.nodes[1].commit_index
    assert head >= 5
    assert c.nodes[3].leader_commit < head
    # The leader's first message to node 3 carries one slot and the commit: node 3
    # knows how far behind it is before it holds the slots.
    c.tick(1, c.config["heartbeat_ticks"])
    first = next(m for m in c.net if m.dst == 3)
    c.net.remove(first)
    c.nodes[3].step(first)
    c.drive(3)
    assert c.nodes[3].leader_commit == head
    assert c.nodes[3].commit_index < head
    c.heartbeats(1, times=5)
    assert c.nodes[3].commit_index == c.nodes[3].leader_commit == head


def test_in_lease_follows_the_leader_and_the_quorum():
    c = Cluster(3)
    assert not any(c.nodes[i].in_lease for i in c.ids)  # nobody leads yet
    c.elect(1)
    c.heartbeats(1, times=2)
    assert all(c.nodes[i].in_lease for i in c.ids)
    c.silence(2)  # a follower that heard no leader for an election timeout
    assert not c.nodes[2].in_lease
    c.depose(1)  # a leader that heard no quorum steps down
    assert not c.nodes[1].in_lease
