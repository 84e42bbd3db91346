"""A replica that lost its disk (issue 11): the leader notices and catches it up,
and it rejoins as a learner that votes again only once the log admits it.

PML = Chandra et al., *Paxos Made Live* (2007) §5.1 ("disk corruption": a
replica with a lost disk rejoins as a non-voting member). The replicas are driven
by hand with a tiny in-memory driver that follows the contract (persist, send,
apply, advance), as in test_core.py.
"""

from __future__ import annotations

import random

import pytest
from support.paxos_cluster import Cluster, prop

from dpq.paxos import (
    VOTER_CLIENT_ID,
    Accept,
    Accepted,
    Ballot,
    Config,
    HardState,
    InstallSnapshot,
    Notice,
    Prepare,
    Proposal,
    Replica,
    Role,
    Sessions,
    Snapshot,
    is_config,
)
from dpq.paxos.core import InvalidProposal, NotLeader
from dpq.paxos.messages import Promise
from dpq.paxos.types import ZERO_BALLOT, voter_of, voter_proposal


def committed_cluster(n: int = 3, slots: int = 5, **config) -> Cluster:
    c = Cluster(n, **config)
    c.elect(1)
    for k in range(1, slots + 1):
        c.nodes[1].propose(prop(k))
    c.deliver()
    c.heartbeats(1, 2)
    assert all(c.values(i) == [prop(k) for k in range(1, slots + 1)] for i in c.ids)
    return c


# --------------------------------------------------------------------------- progress


def test_a_follower_that_lost_its_disk_answers_what_it_really_has() -> None:
    # An Accept far ahead of an empty replica: it stores it but says "nothing past 0".
    c = committed_cluster()
    c.lose_disk(3)
    c.nodes[1].propose(prop(6))
    c.drive(1)
    accept = next(m for m in c.net if isinstance(m, Accept) and m.dst == 3 and m.proposals)
    assert accept.first_slot == 6
    c.net = [accept]
    c.deliver(drop=lambda m: m.dst != 3 and m.src != 3 or m.dst == 1)
    answer = c.sent[-1]
    assert isinstance(answer, Accepted) and answer.src == 3
    assert (answer.match, answer.last, answer.learner) == (0, 6, True)
    assert answer.rejoin == c.nodes[3].rejoin_id > 0


def test_leader_rewinds_a_follower_that_holds_less_than_it_said_and_says_so() -> None:
    c = committed_cluster()
    assert c.nodes[1].status().progress[3][0] == 5
    c.lose_disk(3)
    c.heartbeats(1, 1)
    behind = c.kinds(1, "follower_behind")
    assert behind == [Notice("follower_behind", 3, 5, 0)]
    # ... and catches it up from the log (no snapshot was taken).
    c.heartbeats(1, 10)
    assert c.values(3) == [prop(k) for k in range(1, 6)]
    assert not [m for m in c.sent if isinstance(m, InstallSnapshot)]
    status = c.nodes[1].status()
    assert status.progress[3][0] >= 5 and status.followers[3].behind == 0


def test_a_voter_restarted_with_an_older_commit_index_is_rewound_too() -> None:
    # Not a lost disk: its commit hint lagged (written without fsync). It holds
    # slots 3..5 at an older ballot, which it cannot vouch for at the new leader's.
    c = committed_cluster()
    away = lambda m: m.src == 1 or m.dst == 1
    for i in (2, 3):
        for _ in range(c.config["election_ticks"]):
            c.nodes[i].tick()
    c.net = []
    c.elect(2, drop=away)
    assert c.nodes[2].status().progress[3][0] == 5  # from its promise
    c.disks[3].hard_state = HardState(c.disks[3].hard_state.promised, 2)
    c.nodes[3] = c._new(3, recovered=c.disks[3].recovered(), applied=2)
    c.applied[3] = []
    # Its answers say 2; the resends from slot 3 are lost for a while.
    lost = lambda m: away(m) or isinstance(m, Accept) and m.dst == 3 and bool(m.proposals)
    c.heartbeats(2, 1, drop=lost)
    assert c.nodes[2].status().followers[3][:2] == (2, 3)  # rewound at once ...
    assert not c.kinds(2, "follower_behind")  # ... said once its next answer confirms it
    c.heartbeats(2, 1, drop=lost)
    assert c.kinds(2, "follower_behind") == [Notice("follower_behind", 3, 5, 2)]
    c.heartbeats(2, 5, drop=away)
    assert [e.slot for e in c.applied[3]] == [3, 4, 5]
    assert c.nodes[2].status().followers[3].behind == 0


def test_a_late_copy_of_an_older_answer_rewinds_harmlessly() -> None:
    c = committed_cluster()
    leader = c.nodes[1]
    old = Accepted(2, 1, leader.promised, 2, 2)
    leader.step(old)
    assert leader.status().progress[2][0] == 2
    c.heartbeats(1, 2)
    assert leader.status().progress[2][0] == 5 and leader.commit_index == 5
    assert not c.kinds(1, "follower_behind")  # its next answer undid the dip: no news


def test_catch_up_by_snapshot_when_the_log_was_compacted_past_it() -> None:
    c = committed_cluster(slots=8)
    snap = Snapshot(6, b"state@6")
    c.nodes[1].compact(snap)
    c.lose_disk(3)
    c.heartbeats(1, 10)
    assert c.kinds(1, "follower_behind")[0] == Notice("follower_behind", 3, 8, 0)
    assert c.snapshots[3] == [snap] and c.disks[3].snapshot == snap
    assert [e.slot for e in c.applied[3] if not is_config(e.proposal)] == [7, 8]
    assert len([m for m in c.sent if isinstance(m, InstallSnapshot) and m.dst == 3]) == 1
    assert not c.nodes[3].is_learner  # admitted after the snapshot (a new rejoin id)


# --------------------------------------------------------------------------- learners


def test_a_learner_ignores_prepare_and_never_campaigns() -> None:
    # PML §5.1: a replica with a lost disk does not answer with promises.
    c = Cluster(3)
    c.lose_disk(3)
    learner = c.nodes[3]
    assert learner.is_learner and learner.status().learner
    for _ in range(100):
        learner.tick()
    c.drive(3)
    assert learner.role is Role.FOLLOWER and not c.sent
    learner.step(Prepare(2, 3, Ballot(7, 2), 1))
    c.drive(3)
    assert not c.sent and learner.promised == ZERO_BALLOT


def test_a_learner_never_leads_so_never_takes_a_proposal() -> None:
    c = Cluster(3)
    c.lose_disk(3)
    with pytest.raises(NotLeader):
        c.nodes[3].propose(prop(1))


def test_a_leader_does_not_count_a_learner_towards_a_commit() -> None:
    c = committed_cluster()
    c.lose_disk(3)
    node2_down = lambda m: m.src == 2 or m.dst == 2
    c.heartbeats(1, 1, drop=node2_down)
    leader, learner = c.nodes[1], c.nodes[3]
    assert leader.status().followers[3].learner
    leader.propose(prop(6))
    c.deliver(drop=node2_down)
    c.heartbeats(1, 1, drop=node2_down)  # (within an election timeout: see below)
    # It caught up to the target (5, committed): "3 votes again" went to slot 6,
    # prop(6) to slot 7. The learner and the leader hold both at the leader's
    # ballot: two of three, and still nothing is committed.
    assert [n.had for n in c.kinds(1, "voter_proposed")] == [6]
    assert learner.status().last_slot == 7 and leader.status().progress[3][0] == 7
    assert leader.commit_index == 5 and learner.is_learner
    assert not c.kinds(1, "voter_again") and not c.kinds(3, "now_voter")
    # Node 2 comes back: slot 6 commits, then "3 votes again", then 3 votes.
    c.heartbeats(1, 6)
    assert leader.commit_index >= 7 and not learner.is_learner
    assert c.values(3) == [prop(k) for k in range(1, 7)]
    # With node 2 down again, the leader and node 3 commit on their own.
    leader.propose(prop(7))
    c.deliver(drop=node2_down)
    c.heartbeats(1, 2, drop=node2_down)
    assert c.values(1)[-1] == prop(7) and c.values(3)[-1] == prop(7)


def test_a_leader_that_hears_only_a_learner_steps_down() -> None:
    # A learner keeps no leader in place (CheckQuorum counts voters): a leader that
    # cannot commit tells its clients so.
    c = committed_cluster()
    c.lose_disk(3)
    c.heartbeats(1, 2 * c.config["election_ticks"], drop=lambda m: m.src == 2 or m.dst == 2)
    assert not c.nodes[1].is_leader


def test_voter_entry_is_proposed_only_once_the_target_is_committed() -> None:
    c = committed_cluster()
    leader = c.nodes[1]
    c.lose_disk(3)
    seen: dict[str, int] = {}

    def check() -> None:  # after every step: the first moment the entry exists
        status = leader.status()
        follower = status.followers.get(3)
        if follower is None or "voter" in seen:
            return
        for slot in range(status.first_slot, status.last_slot + 1):
            entry = leader._log.get(slot)
            if entry is not None and is_config(entry.proposal):
                seen["voter"] = slot
                target = c.kinds(1, "learner")[0].had
                assert status.commit >= target and follower.match >= target < slot

    c.watch = check
    for k in range(6, 12):
        leader.propose(prop(k))
    c.drive(1)
    # Slots 6..11 are in flight when node 3 first answers (as a learner): the
    # target is 11, past the commit index (5). Node 2 is slow: node 3 holds all of
    # it long before slot 11 commits, and no entry is proposed meanwhile.
    c.deliver(drop=lambda m: m.src == 2 or m.dst == 2)
    assert c.kinds(1, "learner") == [Notice("learner", 3, 11, 0)]
    assert leader.commit_index == 5 and leader.status().followers[3].match == 11
    assert not c.kinds(1, "voter_proposed") and "voter" not in seen
    c.heartbeats(1, 6)
    assert seen["voter"] == 12 and leader.commit_index >= 12
    assert c.kinds(1, "voter_proposed") == [Notice("voter_proposed", 3, 12, 11)]
    assert [n.had for n in c.kinds(1, "voter_again")] == [12]
    assert c.kinds(3, "now_voter") == [Notice("now_voter", 3, 12)]
    assert not leader.status().followers[3].learner and not c.nodes[3].is_learner


def test_a_learner_votes_again_when_handed_its_own_entry() -> None:
    c = Cluster(3)
    c.lose_disk(3)
    learner = c.nodes[3]
    rejoin = learner.rejoin_id
    b = Ballot(1, 1)
    # Its entry for an earlier rejoin (another rejoin id), committed: still a learner.
    older = voter_proposal(3, rejoin + 1)
    learner.step(Accept(1, 3, b, 1, (prop(1), older), 2))
    c.drive(3)
    assert [e.proposal for e in c.applied[3]] == [prop(1), older] and learner.is_learner
    assert learner.status().learner and not c.kinds(3, "now_voter")
    # Its own entry: it is handed it in Ready.committed and votes from then on.
    learner.step(Accept(1, 3, b, 3, (voter_proposal(3, rejoin),), 3))
    rd = learner.ready()
    assert [e.slot for e in rd.committed] == [3] and not learner.is_learner
    assert learner.take_notices() == [Notice("now_voter", 3, 3)]
    assert learner.rejoin_id == 0
    learner.advance(rd)
    c.drive(3)
    # It answers as a voter, and (once its leader is silent) promises again.
    learner.step(Accept(1, 3, b, 0, (), 3))
    rd = learner.ready()
    (accepted,) = rd.messages
    assert isinstance(accepted, Accepted) and not accepted.learner and accepted.rejoin == 0
    learner.advance(rd)
    for _ in range(c.config["election_ticks"]):
        learner.tick()
    assert learner.role is Role.FOLLOWER
    learner.step(Prepare(2, 3, Ballot(5, 2), 4))
    rd = learner.ready()
    assert [type(m) for m in rd.messages] == [Promise] and learner.promised == Ballot(5, 2)


def test_a_voter_answer_sent_before_the_disk_was_lost_is_not_a_vote() -> None:
    c = committed_cluster()
    leader = c.nodes[1]
    c.lose_disk(3)
    # Node 2 is down; node 3 gets no slot up to 5: it stays at match 0.
    cut = lambda m: m.src == 2 or m.dst == 2 or isinstance(m, Accept) and m.dst == 3 \
        and bool(m.proposals) and m.first_slot <= 5
    c.heartbeats(1, 1, drop=cut)
    assert leader.status().followers[3] == (0, 5, True, 5)
    leader.propose(prop(6))
    c.deliver(drop=cut)
    # A late copy of its last answer as a voter (match 5, not past the target 5):
    # it moves its catch-up, never a commit, and its next answer undoes it.
    leader.step(Accepted(3, 1, leader.promised, 5, 5))
    assert leader.status().followers[3] == (5, 0, True, 5) and leader.commit_index == 5
    c.heartbeats(1, 1, drop=cut)
    assert leader.status().followers[3] == (0, 5, True, 5) and leader.commit_index == 5
    assert not c.kinds(1, "voter_again")
    assert c.kinds(1, "follower_behind")[-1] == Notice("follower_behind", 3, 5, 0)


def test_a_voter_answer_past_the_target_counts_again() -> None:
    # A learner admitted by an entry this leader never saw commit (an earlier
    # leader's): its answers as a voter hold more than the target, which no answer
    # from before its disk was lost can.
    c = committed_cluster()
    leader = c.nodes[1]
    c.lose_disk(3)
    cut = lambda m: m.src == 2 or m.dst == 2 or m.dst == 3 and bool(getattr(m, "proposals", 0))
    c.heartbeats(1, 1, drop=cut)
    leader.propose(prop(6))
    c.deliver(drop=cut)
    assert leader.status().followers[3].learner and leader.commit_index == 5
    leader.step(Accepted(3, 1, leader.promised, 6, 6))
    c.drive(1)
    assert not leader.status().followers[3].learner and leader.commit_index == 6
    assert c.kinds(1, "voter_again") == [Notice("voter_again", 3, 0, 6)]


def test_a_leader_change_during_the_learner_phase_still_ends_with_it_voting() -> None:
    c = committed_cluster(n=5)
    c.lose_disk(5)
    # Leader 1 sees the learner (its heartbeats reach node 5, no entries do) ...
    c.heartbeats(1, 1, drop=lambda m: isinstance(m, Accept) and m.dst == 5 and bool(m.proposals))
    assert c.nodes[1].status().followers[5] == (0, 5, True, 5)
    assert not c.kinds(1, "voter_proposed")
    # ... and is cut off; node 2 takes over (a new ballot: its own target).
    cut = lambda m: m.src == 1 or m.dst == 1
    for i in (2, 3, 4):
        for _ in range(c.config["election_ticks"]):
            c.nodes[i].tick()
        c.drive(i)
    c.net = []
    c.elect(2, drop=cut)
    c.heartbeats(2, 15, drop=cut)
    learners = c.kinds(2, "learner")
    assert learners and learners[0].node == 5
    assert not c.nodes[5].is_learner and c.kinds(5, "now_voter")
    assert c.values(5) == c.values(2)
    # It votes: with 1 and 2 gone, 3, 4 and 5 elect a leader and commit.
    gone = lambda m: m.src in (1, 2) or m.dst in (1, 2)
    for i in (3, 4, 5):
        for _ in range(c.config["election_ticks"]):
            c.nodes[i].tick()
    c.net = []
    c.elect(5, drop=gone)
    c.nodes[5].propose(prop(99))
    c.deliver(drop=gone)
    c.heartbeats(5, 2, drop=gone)
    assert c.values(3)[-1] == prop(99)


def test_a_learner_that_restarts_keeps_learning() -> None:
    # A crash while it learns, after its entry was proposed and before it committed:
    # the driver restarts it as a learner (its marker is still there) with a new
    # rejoin id; the entry for the old one does not admit it, a new one does.
    c = committed_cluster()
    c.lose_disk(3)
    node2_down = lambda m: m.src == 2 or m.dst == 2
    c.heartbeats(1, 1, drop=node2_down)
    first = c.nodes[3].rejoin_id
    assert [n.had for n in c.kinds(1, "voter_proposed")] == [6]
    c.nodes[3] = Replica(Config(3, tuple(c.ids), **c.config), random.Random(99),
                         recovered=c.disks[3].recovered(), learner=True)
    c.applied[3] = []
    second = c.nodes[3].rejoin_id
    assert c.nodes[3].is_learner and second not in (0, first)
    c.heartbeats(1, 15)
    assert not c.nodes[3].is_learner and not c.nodes[1].status().followers[3].learner
    (now_voter,) = c.kinds(3, "now_voter")
    entry = next(e for e in c.applied[3] if e.slot == now_voter.had)
    assert voter_of(entry.proposal) == (3, second)
    assert voter_of(next(e for e in c.applied[3] if e.slot == 6).proposal) == (3, first)
    assert c.values(3) == [prop(k) for k in range(1, 6)]


# --------------------------------------------------------------------------- config entries


def test_clients_cannot_propose_a_config_entry() -> None:
    c = committed_cluster()
    for client_id in (VOTER_CLIENT_ID, "paxos:anything"):
        with pytest.raises(InvalidProposal, match="client_id: .* is reserved"):
            c.nodes[1].propose(Proposal(client_id, 1, b"3"))


def test_config_entries_are_skipped_by_sessions_and_the_queue() -> None:
    from dpq.queue.state import QueueState

    entry = voter_proposal(3, 77)
    assert is_config(entry) and voter_of(entry) == (3, 77)
    assert voter_of(Proposal(VOTER_CLIENT_ID, 1, b"x3")) is None
    sessions = Sessions(max_clients=4, window=8)
    assert not sessions.should_apply(entry.client_id, entry.seq) and len(sessions) == 0
    state = QueueState(members=frozenset({1, 2, 3}))
    assert state.apply(1, entry) is None and state.applied_slot == 1
