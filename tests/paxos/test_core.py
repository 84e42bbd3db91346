"""Unit tests of the Multi-Paxos core, each citing the paper section it checks.

PMS = Lamport, *Paxos Made Simple* (2001); PMMC = van Renesse & Altinbuken,
*Paxos Made Moderately Complex* (2015). The tests drive replicas by hand with a
tiny in-memory driver that follows the contract (persist, send, apply, advance),
so every message can be inspected, dropped or forged.
"""

from __future__ import annotations

import random

import pytest
from support.paxos_cluster import Cluster, prop
from support.paxos_disk import Recovered

from dpq.paxos import (
    NOOP,
    ZERO_BALLOT,
    Accept,
    Accepted,
    Ballot,
    Config,
    Entry,
    HardState,
    InstallSnapshot,
    Nack,
    NotLeader,
    Overloaded,
    Prepare,
    Promise,
    Proposal,
    Ready,
    Replica,
    Role,
    Snapshot,
)
from dpq.paxos.core import InvalidProposal, ProposalRefused
from dpq.paxos.messages import Commit
from dpq.paxos.types import MAX_SEQ

# --------------------------------------------------------------------------- elections


def test_single_node_cluster_elects_itself_and_commits() -> None:
    # Reference: PMS §2.2 — with one acceptor, a majority is that acceptor.
    c = Cluster(1)
    c.elect(1)
    c.nodes[1].propose(prop(1))
    c.drive(1)
    assert c.values(1) == [prop(1)]


def test_election_timeout_is_randomised_in_e_to_2e() -> None:
    # Reference: PMS §3 — progress needs one distinguished proposer; "randomness or
    # real time" (the FLP remark) picks it: a timeout drawn from the caller's RNG.
    for seed in range(20):
        node = Replica(Config(1, (1, 2, 3), election_ticks=10), random.Random(seed))
        expected = random.Random(seed).randrange(10, 20)
        ticks = 0
        while node.role is Role.FOLLOWER:
            node.tick()
            ticks += 1
        assert ticks == expected


def test_phase1_runs_once_and_a_quorum_of_promises_elects() -> None:
    # Reference: PMS §3 — a new leader runs phase 1 for all instances at once;
    # PMS §2.2 — it needs promises from a majority.
    c = Cluster(5)
    c.campaign(1)
    prepares = c.sent_of(Prepare, src=1)
    assert sorted(m.dst for m in prepares) == [2, 3, 4, 5]
    assert {m.from_slot for m in prepares} == {1}
    ballot = prepares[0].ballot
    assert ballot.node == 1 and ballot.round >= 1
    # Two promises plus its own make three of five.
    c.deliver(drop=lambda m: m.dst in (4, 5) or m.src in (4, 5))
    assert c.nodes[1].is_leader and c.nodes[1].promised == ballot
    for i in range(5):
        c.nodes[1].propose(prop(i))
    c.deliver()
    assert len(c.sent_of(Prepare, src=1)) == 4  # no further phase 1 for later slots


def test_candidate_needs_a_majority() -> None:
    # Reference: PMS §2.2 — phase 2 only after responses from a majority.
    c = Cluster(5)
    c.campaign(1)
    c.deliver(drop=lambda m: m.dst in (3, 4, 5) or m.src in (3, 4, 5))
    assert c.nodes[1].role is Role.CANDIDATE  # only itself and node 2


def test_candidate_counts_its_own_promise_only_once_durable() -> None:
    # Reference: PMS §2.5 — an acceptor (the candidate too) records its promise in
    # stable storage before acting on it.
    c = Cluster(3)
    node = c.nodes[1]
    while node.role is not Role.CANDIDATE:
        node.tick()
    rd = node.ready()
    assert rd.must_sync and rd.hard_state is not None
    assert rd.hard_state.promised == node.promised
    # A promise from node 2 arrives before the candidate's Ready is advanced.
    prepare = next(m for m in rd.messages if m.dst == 2)
    c.nodes[2].step(prepare)
    promise = c.nodes[2].ready().messages[0]
    node.step(promise)
    assert node.role is Role.CANDIDATE  # its own promise is not durable yet
    node.advance(rd)
    assert node.is_leader


def test_new_ballot_is_above_every_ballot_seen() -> None:
    # Reference: PMS §2.5 — a proposer picks a number larger than any it has seen.
    c = Cluster(3)
    c.elect(1)
    nack_ballot = Ballot(41, 3)
    c.nodes[2].step(Nack(3, 2, nack_ballot, ZERO_BALLOT))
    c.campaign(2)
    assert c.nodes[2].promised.round > c.nodes[1].promised.round
    c.nodes[1].step(Nack(3, 1, nack_ballot, c.nodes[1].promised))
    assert not c.nodes[1].is_leader  # preempted
    c.campaign(1)
    assert c.nodes[1].promised > nack_ballot


# --------------------------------------------------------------------------- acceptor


def test_acceptor_nacks_a_prepare_below_its_promise() -> None:
    # Reference: PMS §2.2 (P1a) — an acceptor promises not to accept lower ballots.
    c = Cluster(3)
    node = c.nodes[2]
    node.step(Prepare(3, 2, Ballot(5, 3), 1))
    c.drive(2)
    node.step(Prepare(1, 2, Ballot(4, 1), 1))
    (rd,) = c.drive(2)
    assert rd.messages == [Nack(2, 1, Ballot(5, 3), Ballot(4, 1))]
    assert rd.hard_state is None  # nothing changed


def test_acceptor_nacks_an_accept_below_its_promise_and_keeps_its_log() -> None:
    # Reference: PMS §2.2 (P1a) — accept a proposal unless a higher prepare was promised.
    c = Cluster(3)
    node = c.nodes[2]
    node.step(Prepare(3, 2, Ballot(5, 3), 1))
    c.drive(2)
    node.step(Accept(1, 2, Ballot(4, 1), 1, (prop(1),), 0))
    (rd,) = c.drive(2)
    assert rd.entries == []
    assert rd.messages == [Nack(2, 1, Ballot(5, 3), Ballot(4, 1))]


def test_accept_at_a_higher_ballot_implies_the_promise() -> None:
    # Reference: PMS §2.2 — accepting proposal n means no lower proposal may be
    # accepted later; the promise rises with it and is persisted.
    c = Cluster(3)
    c.nodes[2].step(Accept(1, 2, Ballot(3, 1), 1, (prop(1),), 0))
    (rd,) = c.drive(2)
    assert rd.hard_state == HardState(Ballot(3, 1), 0)
    assert rd.entries == [Entry(1, Ballot(3, 1), prop(1))]
    assert rd.must_sync
    assert rd.messages == [Accepted(2, 1, Ballot(3, 1), 1, 1)]
    assert c.nodes[2].leader_hint == 1


def test_promise_reports_accepted_entries_from_the_requested_slot() -> None:
    # Reference: PMS §2.2 (phase 1b) — the promise carries the highest-numbered
    # proposal accepted; PMS §3 — for every instance from the first unknown one.
    c = Cluster(3)
    node = c.nodes[3]
    node.step(Accept(1, 3, Ballot(1, 1), 1, (prop(1), prop(2), prop(3)), 1))
    c.drive(3)
    c.silence(3)  # leader 1 is gone
    node.step(Prepare(2, 3, Ballot(2, 2), 2))
    (rd,) = c.drive(3)
    assert rd.must_sync and rd.hard_state.promised == Ballot(2, 2)
    (promise,) = rd.messages
    assert promise == Promise(3, 2, Ballot(2, 2), 1,
                              (Entry(2, Ballot(1, 1), prop(2)), Entry(3, Ballot(1, 1), prop(3))),
                              None)


def test_duplicate_and_reordered_accepts_are_idempotent() -> None:
    # Reference: PMS §2.1 — messages can be duplicated, lost and reordered.
    c = Cluster(3)
    node = c.nodes[2]
    b = Ballot(1, 1)
    second = Accept(1, 2, b, 3, (prop(3), prop(4)), 0)
    first = Accept(1, 2, b, 1, (prop(1), prop(2)), 0)
    node.step(second)
    (rd,) = c.drive(2)
    assert rd.messages == [Accepted(2, 1, b, 0, 4)]  # a hole at 1..2: match stays 0
    node.step(first)
    node.step(first)
    node.step(second)
    (rd,) = c.drive(2)
    assert [e.slot for e in rd.entries] == [1, 2]  # nothing persisted twice
    assert [m.match for m in rd.messages] == [4, 4, 4]


# --------------------------------------------------------------------------- phase 1 adoption


def win_with(c: Cluster, promises: dict[int, tuple[int, tuple[Entry, ...]]]) -> Replica:
    """Node 1 campaigns; the given peers answer with forged promises (at a round
    above the ballots in them, as an honest acceptor's would be)."""
    c.nodes[1].step(Nack(2, 1, Ballot(9, 2), ZERO_BALLOT))  # teaches node 1 round 9
    c.campaign(1)
    node = c.nodes[1]
    c.net.clear()
    for src, (commit, entries) in promises.items():
        node.step(Promise(src, 1, node.promised, commit, entries, None))
    c.drive(1)
    return node


def test_leader_adopts_the_highest_ballot_value_of_each_slot() -> None:
    # Reference: PMS §2.2 (P2c) — propose the value of the highest-numbered
    # proposal among the majority's responses; PMMC §3 (pmax).
    c = Cluster(5)
    v_old, v_new, v_mid = prop(1, "old"), prop(1, "new"), prop(2, "mid")
    node = win_with(c, {
        2: (0, (Entry(1, Ballot(1, 2), v_old), Entry(2, Ballot(3, 4), v_mid))),
        3: (0, (Entry(1, Ballot(2, 5), v_new),)),
    })
    assert node.is_leader
    accepts = [m for m in c.net if isinstance(m, Accept) and m.proposals]
    assert accepts
    for m in accepts:
        assert m.ballot == node.promised  # re-proposed at the new ballot
        assert m.first_slot == 1 and m.proposals[:2] == (v_new, v_mid)


def test_a_value_chosen_without_anyone_knowing_survives_the_leader() -> None:
    # Reference: PMS §2.2 (P2) — once a value is chosen, every higher-numbered
    # proposal that is chosen has that value, even if nobody learned it yet.
    c = Cluster(3)
    c.elect(1)
    c.nodes[1].propose(prop(1, "chosen"))
    # Node 2 accepts: with the leader's own acceptance that is a majority, but the
    # Accepted is lost, so nobody knows slot 1 is chosen. Then node 1 dies.
    c.deliver(drop=lambda m: isinstance(m, Accepted) or m.dst == 3)
    assert all(c.nodes[i].commit_index == 0 for i in c.ids)
    c.net.clear()
    isolated = lambda m: 1 in (m.src, m.dst)
    c.silence(2)  # node 2's clock runs: after an election timeout node 1 is not live
    c.campaign(3)
    c.deliver(drop=isolated)
    if not c.nodes[3].is_leader:  # a Nack taught it a higher round
        c.campaign(3)
        c.deliver(drop=isolated)
    assert c.nodes[3].is_leader
    c.tick(3, 2)
    c.deliver(drop=isolated)
    assert c.values(3) == c.values(2) == [prop(1, "chosen")]


def test_leader_fills_gaps_with_noops() -> None:
    # Reference: PMS §3 — a new leader fills instances with no value known with
    # "no-op" commands, so later commands can be executed.
    c = Cluster(3)
    node = win_with(c, {2: (0, (Entry(3, Ballot(1, 2), prop(3)),))})
    c.deliver()
    assert c.values(1) == [NOOP, NOOP, prop(3)]
    node.propose(prop(4))
    c.deliver()
    assert c.values(1)[-1] == prop(4)
    assert c.nodes[1].status().last_slot == 4  # new proposals go after the adopted slots


def test_leader_learns_chosen_values_from_a_promise_that_knows_more() -> None:
    # Reference: PMS §3 — a leader that does not know some chosen commands
    # learns them in phase 1 before proposing.
    c = Cluster(3)
    entries = tuple(Entry(s, Ballot(1, 3), prop(s)) for s in range(1, 6))
    node = win_with(c, {2: (5, entries)})
    assert node.is_leader and node.commit_index == 5
    assert c.values(1) == [prop(s) for s in range(1, 6)]
    assert not [m for m in c.net if isinstance(m, Accept) and m.dst == 2 and m.first_slot <= 5
                and m.proposals]  # node 2 holds them already: only later slots go to it


def test_promise_carries_the_snapshot_when_the_slots_are_compacted() -> None:
    # Reference: PMMC §3 (state transfer to a lagging leader) — values compacted
    # into a snapshot are only available from it.
    c = Cluster(3)
    c.elect(2)
    for i in range(1, 7):
        c.nodes[2].propose(prop(i))
    c.deliver(drop=lambda m: m.dst == 1 or m.src == 1)
    c.tick(2, 2)  # the heartbeat tells node 3 the commit index
    c.deliver(drop=lambda m: m.dst == 1 or m.src == 1)
    snap = Snapshot(6, b"state@6")
    for i in (2, 3):
        c.nodes[i].compact(snap)
    c.net.clear()
    c.depose(2)  # node 2 loses its quorum (node 1 is cut off, node 3 now too)
    c.elect(1)  # with node 2's promise: node 3 still counts node 2 as live
    assert c.snapshots[1] == [snap]
    assert c.nodes[1].commit_index >= 6
    assert c.applied[1] == []  # the application loads the snapshot instead
    c.nodes[1].propose(prop(7))
    c.deliver()
    c.tick(1, 2)
    c.deliver()
    assert c.values(1) == [prop(7)] and c.values(2)[-1] == prop(7)


# --------------------------------------------------------------------------- phase 2


def test_commit_needs_a_majority_at_one_ballot() -> None:
    # Reference: PMS §2.3 — a value is chosen when a majority of acceptors accepted it.
    c = Cluster(5)
    c.elect(1)
    node = c.nodes[1]
    node.propose(prop(1))
    c.drive(1)
    c.deliver(drop=lambda m: m.dst in (3, 4, 5))  # only node 2 accepts: 2 of 5
    assert node.commit_index == 0
    accept = next(m for m in reversed(c.sent) if isinstance(m, Accept) and m.dst == 3
                  and m.proposals)
    c.nodes[3].step(accept)
    c.drive(3)
    c.deliver(drop=lambda m: m.dst in (4, 5))
    assert node.commit_index == 1 and c.values(1) == [prop(1)]


def test_leader_counts_its_own_acceptance_only_once_persisted() -> None:
    # Reference: PMS §2.5 — the leader's acceptor persists before its vote counts.
    c = Cluster(3)
    c.elect(1)
    node = c.nodes[1]
    node.propose(prop(1))
    rd = node.ready()
    assert rd.entries == [Entry(1, node.promised, prop(1))] and rd.must_sync
    # Node 2 accepts (it got the Accept; the leader's own entry is not yet durable).
    for m in rd.messages:
        if m.dst == 2:
            c.nodes[2].step(m)
    (reply,) = [m for m in c.drive(2)[0].messages]
    node.step(reply)
    assert node.commit_index == 0  # 1 of 3: itself not counted yet
    node.advance(rd)
    assert node.commit_index == 1


def test_commit_index_reaches_followers_as_soon_as_it_advances() -> None:
    # Reference: PMS §2.3 — the leader informs the learners of a chosen value.
    # It does so at once (a Commit), not at the next heartbeat: a follower
    # serves a slot only once it knows the slot is chosen.
    c = Cluster(3)
    c.elect(1)
    c.sent.clear()
    c.nodes[1].propose(prop(1))
    c.deliver()  # no tick: no heartbeat is due
    assert c.nodes[1].commit_index == 1
    assert c.nodes[2].commit_index == c.nodes[3].commit_index == 1
    notices = c.sent_of(Commit, src=1)
    assert {m.dst for m in notices} == {2, 3} and {m.commit for m in notices} == {1}
    assert c.values(2) == c.values(3) == [prop(1)]
    # Not answered: one Accepted per follower, for the Accept.
    assert len(c.sent_of(Accepted, dst=1)) == 2


def test_a_commit_notice_from_a_deposed_leader_is_refused() -> None:
    c = Cluster(3)
    c.elect(1)
    c.nodes[1].propose(prop(1))
    c.deliver(drop=lambda m: isinstance(m, Commit))
    stale = Commit(1, 2, c.nodes[1].promised, 1)
    c.depose(1)
    c.silence(2)
    c.elect(3)
    c.sent.clear()
    c.nodes[2].step(stale)
    c.drive(2)
    assert c.nodes[2].leader_hint == 3
    nacks = c.sent_of(Nack, src=2, dst=1)
    assert nacks and nacks[0].rejected == stale.ballot


def test_commit_index_reaches_a_follower_that_missed_the_notice_on_the_heartbeat() -> None:
    c = Cluster(3)
    c.elect(1)
    c.nodes[1].propose(prop(1))
    c.deliver(drop=lambda m: isinstance(m, Commit))
    assert c.nodes[1].commit_index == 1
    assert c.nodes[2].commit_index == 0  # the Accept went out before the commit
    c.tick(1, 2)  # heartbeat_ticks
    heartbeats = [m for m in c.net if isinstance(m, Accept) and not m.proposals]
    assert {m.dst for m in heartbeats} == {2, 3} and {m.commit for m in heartbeats} == {1}
    c.deliver()
    assert c.values(2) == c.values(3) == [prop(1)]


def test_commit_index_rides_on_the_next_accept() -> None:
    # Reference: PMMC §3 — decisions are piggybacked on later phase 2 messages.
    c = Cluster(3)
    c.elect(1)
    c.nodes[1].propose(prop(1))
    c.deliver()
    c.nodes[1].propose(prop(2))
    c.drive(1)
    accepts = [m for m in c.net if isinstance(m, Accept)]
    assert accepts and all(m.commit == 1 for m in accepts)
    c.deliver()
    assert c.values(2)[:1] == [prop(1)]


def test_follower_does_not_learn_a_value_accepted_at_an_older_ballot() -> None:
    # Reference: PMS §2.3 — a learner must find out a value *has been chosen*; a
    # value accepted at an older ballot may have lost to another.
    c = Cluster(3)
    node = c.nodes[3]
    node.step(Accept(1, 3, Ballot(1, 1), 1, (prop(1, "stale"),), 0))
    c.drive(3)
    # Leader 2 (ballot 2) chose another value in slot 1 and says so in a heartbeat.
    node.step(Accept(2, 3, Ballot(2, 2), 0, (), 1))
    (rd,) = c.drive(3)
    assert rd.committed == [] and node.commit_index == 0
    assert rd.messages == [Accepted(3, 2, Ballot(2, 2), 0, 0)]  # "send me slot 1"
    node.step(Accept(2, 3, Ballot(2, 2), 1, (prop(1, "chosen"),), 1))
    c.drive(3)
    assert c.values(3) == [prop(1, "chosen")]


def test_burst_of_proposals_costs_one_accept_per_follower() -> None:
    # Reference: PMMC §3 — many slots in flight; batching amortises the messages.
    c = Cluster(5, max_entries_per_message=64)
    c.elect(1)
    before = len(c.sent)
    for i in range(1, 41):
        c.nodes[1].propose(prop(i))
    (rd,) = c.drive(1)
    assert len(rd.messages) == 4
    assert all(isinstance(m, Accept) and len(m.proposals) == 40 for m in rd.messages)
    assert len(rd.entries) == 40
    c.deliver()
    assert c.values(1) == [prop(i) for i in range(1, 41)]
    sent = c.sent[before:]
    assert sum(1 for m in sent if isinstance(m, Accept) and m.proposals) == 4
    # Then one commit notice per follower, not answered.
    notices = [m for m in sent if isinstance(m, Commit)]
    assert sorted(m.dst for m in notices) == [2, 3, 4, 5] and {m.commit for m in notices} == {40}
    assert len(sent) == 12  # 4 Accepts, 4 Accepteds, 4 Commits


def test_pipelining_window_bounds_slots_in_flight() -> None:
    # Reference: PMMC §3 — the leader proposes at most WINDOW slots past the
    # first undecided one.
    c = Cluster(3, max_inflight_slots=4)
    c.elect(1)
    for i in range(1, 11):
        c.nodes[1].propose(prop(i))
    (rd,) = c.drive(1)
    assert [e.slot for e in rd.entries] == [1, 2, 3, 4]
    c.deliver()
    assert c.values(1) == [prop(i) for i in range(1, 11)]
    with pytest.raises(Overloaded):
        small = Cluster(3, max_inflight_slots=1, max_queued_proposals=2)
        small.elect(1)
        for i in range(4):
            small.nodes[1].propose(prop(i + 1))


# --------------------------------------------------------------------------- roles


def test_propose_on_a_follower_raises_not_leader_with_a_hint() -> None:
    # Reference: PMMC §3 — clients send requests to the leader; others redirect.
    c = Cluster(3)
    with pytest.raises(NotLeader) as excinfo:
        c.nodes[2].propose(prop(1))
    assert excinfo.value.leader_hint is None
    c.elect(1)
    with pytest.raises(NotLeader) as excinfo:
        c.nodes[2].propose(prop(1))
    assert excinfo.value.leader_hint == 1
    with pytest.raises(ValueError):
        c.nodes[1].propose(NOOP)


def test_preempted_leader_steps_down_and_drops_unassigned_proposals() -> None:
    # Reference: PMMC §3 — a leader receiving a higher ballot is preempted.
    c = Cluster(3, max_inflight_slots=1)
    c.elect(1)
    for i in range(1, 4):
        c.nodes[1].propose(prop(i))
    c.drive(1)
    c.net.clear()
    c.nodes[1].step(Nack(2, 1, Ballot(7, 2), c.nodes[1].promised))
    assert c.nodes[1].role is Role.FOLLOWER
    assert not c.nodes[1].status().progress
    with pytest.raises(NotLeader):
        c.nodes[1].propose(prop(9))


def test_isolated_leader_steps_down_after_an_election_timeout() -> None:
    # Reference: PMS §2.4 — progress needs a leader that can reach a majority
    # (etcd-io/raft's CheckQuorum).
    c = Cluster(3)
    c.elect(1)
    c.net.clear()
    for _ in range(20):  # within two election timeouts of the last answers
        c.tick(1)
        c.net.clear()  # nobody answers
    assert c.nodes[1].role is Role.FOLLOWER


def test_follower_campaigns_when_the_leader_is_silent() -> None:
    # Reference: PMS §3 — a new leader is selected when the old one fails.
    c = Cluster(3)
    c.elect(1)
    old = c.nodes[1].promised
    c.silence(3)  # node 3's clock runs too: it stops counting node 1 as live
    for _ in range(20):
        c.nodes[2].tick()
    assert c.nodes[2].role is Role.CANDIDATE
    c.drive(2)
    c.deliver(drop=lambda m: 1 in (m.src, m.dst))
    assert c.nodes[2].is_leader and c.nodes[2].promised > old


def test_heartbeats_keep_followers_from_campaigning() -> None:
    # Reference: PMS §3 — a stable leader is not disturbed.
    c = Cluster(3)
    c.elect(1)
    for _ in range(100):
        for i in c.ids:
            c.nodes[i].tick()
        c.deliver()
    assert c.nodes[1].is_leader
    assert len(c.sent_of(Prepare)) == 2


# --------------------------------------------------------------------------- catch-up


def test_follower_that_missed_slots_catches_up_in_throttled_batches() -> None:
    # Reference: PMMC §3 — a replica that missed decisions learns them later.
    c = Cluster(3, max_entries_per_message=3, max_inflight_slots=100)
    c.elect(1)
    for i in range(1, 11):
        c.nodes[1].propose(prop(i))
    c.deliver(drop=lambda m: m.dst == 3)
    assert c.values(1) == [prop(i) for i in range(1, 11)] and c.values(3) == []
    before = len(c.sent)
    for _ in range(12):
        c.tick(1)
        c.deliver()
    assert c.values(3) == [prop(i) for i in range(1, 11)]
    catch_up = [m for m in c.sent[before:] if isinstance(m, Accept) and m.dst == 3
                and m.proposals]
    assert catch_up and max(len(m.proposals) for m in catch_up) <= 3


def test_hole_reported_by_a_follower_is_resent() -> None:
    # Reference: PMS §2.1 — messages can be lost; the leader re-sends what was lost.
    c = Cluster(3, max_entries_per_message=2)
    c.elect(1)
    for i in range(1, 7):
        c.nodes[1].propose(prop(i))
    c.drive(1)
    lost = [m for m in c.net if isinstance(m, Accept) and m.dst == 3 and m.first_slot == 1]
    assert len(lost) == 1
    mark = len(c.sent)
    c.deliver(drop=lambda m: m in lost)
    # Node 3 accepted 3..6 but reported match 0: the leader resent from slot 1 at once.
    later = c.sent[mark:]
    holes = [m for m in later if isinstance(m, Accepted) and m.src == 3 and m.last > m.match]
    assert holes and holes[0].match == 0
    resent = [m for m in later if isinstance(m, Accept) and m.dst == 3 and m.first_slot == 1]
    assert resent and resent[0].proposals == (prop(1), prop(2))
    c.tick(1, 2)  # the heartbeat brings the commit index
    c.deliver()
    assert c.values(3) == [prop(i) for i in range(1, 7)]


def test_follower_behind_the_compaction_point_gets_the_snapshot_then_the_log() -> None:
    # Reference: PMMC §3 ("state transfer") / PMS §3 — a far-behind replica is
    # brought up to date from a snapshot of the state machine.
    c = Cluster(3)
    c.elect(1)
    for i in range(1, 9):
        c.nodes[1].propose(prop(i))
    c.deliver(drop=lambda m: m.dst == 3)
    snap = Snapshot(5, b"state@5")
    c.nodes[1].compact(snap)
    assert c.nodes[1].status().first_slot == 6
    for _ in range(6):
        c.tick(1)
        c.deliver()
    assert c.snapshots[3] == [snap]
    assert [e.slot for e in c.applied[3]] == [6, 7, 8]
    assert c.disks[3].snapshot == snap
    assert len(c.sent_of(InstallSnapshot, dst=3)) == 1


def test_compact_refuses_a_snapshot_past_what_was_applied() -> None:
    # Reference: PMMC §3 — only decided and executed slots may be garbage-collected.
    c = Cluster(1)
    c.elect(1)
    c.nodes[1].propose(prop(1))
    c.drive(1)
    with pytest.raises(ValueError):
        c.nodes[1].compact(Snapshot(2, b""))
    c.nodes[1].compact(Snapshot(1, b"s"))
    assert c.nodes[1].status().first_slot == 2


# --------------------------------------------------------------------------- recovery


def test_restart_restores_promise_log_and_commit() -> None:
    # Reference: PMS §2.5 — an acceptor that restarts remembers its promise and
    # accepted values from stable storage.
    c = Cluster(3)
    c.elect(1)
    for i in range(1, 4):
        c.nodes[1].propose(prop(i))
    c.deliver()
    c.tick(1, 2)
    c.deliver()
    promised = c.nodes[2].promised
    c.restart(2)
    node = c.nodes[2]
    assert node.promised == promised
    assert node.status().last_slot == 3
    c.drive(2)
    assert c.values(2) == [prop(1), prop(2), prop(3)]  # re-delivered: applied defaulted to 0
    node.step(Prepare(3, 2, Ballot(promised.round - 1, 3), 1))
    (rd,) = c.drive(2)
    assert isinstance(rd.messages[0], Nack)  # the promise survived


def test_restart_with_applied_skips_what_the_application_has() -> None:
    # Reference: PMMC §3 — a replica executes each slot once (its slot_out).
    c = Cluster(1)
    c.elect(1)
    for i in range(1, 5):
        c.nodes[1].propose(prop(i))
    c.drive(1)
    c.nodes[1].tick()
    c.drive(1)
    c.restart(1, applied=3)
    c.drive(1)
    assert c.values(1) == [prop(4)]


def test_restart_with_a_snapshot_resumes_after_it() -> None:
    # Reference: PMMC §3 — state is rebuilt from the snapshot plus later slots.
    c = Cluster(1)
    c.elect(1)
    for i in range(1, 6):
        c.nodes[1].propose(prop(i))
    c.drive(1)
    c.nodes[1].tick()
    c.drive(1)
    c.nodes[1].compact(Snapshot(3, b"s3"))
    c.disks[1].snapshot = Snapshot(3, b"s3")
    c.restart(1)
    assert c.nodes[1].status().first_slot == 4
    c.drive(1)
    assert [e.slot for e in c.applied[1]] == [4, 5]
    with pytest.raises(ValueError):
        c.restart(1, applied=2)  # before the snapshot: load it first


def test_restore_refuses_a_log_that_lost_durable_entries() -> None:
    # Reference: PMS §2.5 — stable storage must not lose what was acknowledged.
    config = Config(1, (1, 2, 3))
    broken = Recovered(HardState(Ballot(1, 1), 3), [Entry(1, Ballot(1, 1), prop(1))], None)
    with pytest.raises(ValueError, match="lost"):
        Replica(config, random.Random(0), recovered=broken)


def test_restarted_candidate_never_reuses_a_ballot() -> None:
    # Reference: PMS §2.5 — a proposer must remember the highest number it tried.
    c = Cluster(3)
    c.campaign(1)
    first = c.nodes[1].promised
    c.restart(1)
    c.campaign(1)
    assert c.nodes[1].promised > first


def test_hard_state_commit_only_names_slots_persisted_before() -> None:
    # Reference: PMS §2.5 — what is persisted must be consistent after any crash:
    # the commit hint never runs ahead of entries written in earlier Readys.
    c = Cluster(3)
    node = c.nodes[2]
    node.step(Accept(1, 2, Ballot(1, 1), 1, (prop(1),), 1))
    first, second = c.drive(2)
    assert first.committed == [Entry(1, Ballot(1, 1), prop(1))]
    assert first.hard_state == HardState(Ballot(1, 1), 0)  # slot 1 is in this very Ready
    # Once that Ready is durable the hint catches up, without an fsync.
    assert second.hard_state == HardState(Ballot(1, 1), 1) and not second.must_sync
    assert not second.entries and not second.messages


# --------------------------------------------------------------------------- contract


def test_ready_and_advance_enforce_one_outstanding_ready() -> None:
    # Reference: etcd-io/raft's RawNode contract (Ready / Advance), PMS §2.5.
    c = Cluster(3)
    node = c.nodes[1]
    c.campaign(1)
    node.tick()
    rd = node.ready()
    with pytest.raises(RuntimeError):
        node.ready()
    with pytest.raises(RuntimeError):
        node.advance(Ready())
    node.advance(rd)
    assert isinstance(node.ready(), Ready)


def test_messages_for_others_and_from_strangers_are_ignored() -> None:
    # Reference: PMS §2.1 — an agent acts only on messages meant for it.
    c = Cluster(3)
    c.nodes[2].step(Prepare(1, 3, Ballot(5, 1), 1))
    c.nodes[2].step(Prepare(9, 2, Ballot(5, 9), 1))
    assert not c.nodes[2].has_ready()
    with pytest.raises(TypeError):
        c.nodes[2].step(Ballot(1, 1))  # type: ignore[arg-type]


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        Config(4, (1, 2, 3))
    with pytest.raises(ValueError):
        Config(1, (1, 1, 2))
    with pytest.raises(ValueError):
        Config(1, (1, 2, 3), election_ticks=2, heartbeat_ticks=2)
    assert Config(2, (3, 2, 1)).peers == (1, 2, 3)


# --------------------------------------------------------------------------- leader stickiness


def test_follower_ignores_a_higher_prepare_while_its_leader_is_live() -> None:
    # Reference: Raft thesis §4.2.3 (disruptive servers); etcd-io/raft raft.go
    # `inLease`: within an election timeout of hearing the leader, no vote is given.
    c = Cluster(3)
    c.elect(1)
    promised = c.nodes[3].promised
    for src in (2, 1):  # another node, and a forgery under the leader's own id
        c.nodes[3].step(Prepare(src, 3, Ballot(promised.round + 5, src), 1))
        assert not c.nodes[3].has_ready()  # no promise, nothing persisted, no answer
        assert c.nodes[3].promised == promised and c.nodes[3].leader_hint == 1
    c.silence(3)  # an election timeout without the leader: it is not live any more
    c.nodes[3].step(Prepare(2, 3, Ballot(promised.round + 5, 2), 1))
    (rd,) = c.drive(3)
    assert rd.hard_state.promised == Ballot(promised.round + 5, 2)
    assert [type(m) for m in rd.messages] == [Promise]


def test_leader_that_hears_a_quorum_ignores_a_higher_prepare() -> None:
    # Reference: etcd-io/raft raft.go (CheckQuorum + `inLease`).
    c = Cluster(3)
    c.elect(1)
    ballot = c.nodes[1].promised
    c.nodes[1].step(Prepare(2, 1, Ballot(ballot.round + 1, 2), 1))
    assert c.nodes[1].is_leader and c.nodes[1].promised == ballot
    c.nodes[1].propose(prop(1))
    c.deliver()
    assert c.values(1) == c.values(2) == c.values(3) == [prop(1)]


def test_leader_failure_still_elects_within_two_election_timeouts() -> None:
    # Reference: PMS §3 — a new leader is selected when the old one fails; the
    # followers stop counting it live after E ticks, before the first campaigns.
    for seed_node in (1, 2, 3):
        c = Cluster(3)
        c.elect(seed_node)
        others = [i for i in c.ids if i != seed_node]
        ticks = 0
        while not any(c.nodes[i].is_leader for i in others):
            ticks += 1
            assert ticks <= 2 * c.config["election_ticks"] + 2 * c.config["heartbeat_ticks"]
            for i in others:
                c.nodes[i].tick()
            c.deliver(drop=lambda m, dead=seed_node: dead in (m.src, m.dst))


def test_a_prepare_storm_does_not_stall_commits() -> None:
    # Issue 10: a Prepare with a slightly higher round every 300 ms stalled all
    # writes. Here one arrives every 3 ticks (heartbeat 2, election 10), under
    # every member's id in turn, at a round above any seen; the leader keeps
    # its ballot and every proposal commits in order.
    c = Cluster(3)
    c.elect(1)
    ballot = c.nodes[1].promised
    for t in range(300):
        if t % 3 == 0:
            src = c.ids[(t // 3) % 3]
            top = max(c.nodes[i].promised.round for i in c.ids)
            c.net.extend(Prepare(src, dst, Ballot(top + 1, src), 1) for dst in c.ids if dst != src)
        if t % 2 == 0:
            c.nodes[1].propose(prop(t))
        for i in c.ids:
            c.nodes[i].tick()
        c.deliver()
    assert c.nodes[1].is_leader and c.nodes[1].promised == ballot
    expected = [prop(t) for t in range(0, 300, 2)]
    c.tick(1, 2)
    c.deliver()
    assert c.values(1) == c.values(2) == c.values(3) == expected


# --------------------------------------------------------------------------- hostile input


def test_step_ignores_numbers_out_of_bounds() -> None:
    # Issue 10: a round of 2**63 killed every node (the WAL stores int64). The
    # wire refuses it; the core, behind it, ignores it too and never persists it.
    c = Cluster(3)
    c.elect(1)
    c.deliver()
    huge, minus = 2**63, -1
    forged = [
        Prepare(2, 3, Ballot(huge, 2), 1),
        Prepare(2, 3, Ballot(5, 2), minus),
        Accept(2, 3, Ballot(huge, 2), 1, (prop(1),), 0),
        Accept(1, 3, c.nodes[1].promised, 1, (Proposal("c", huge, b""),), 0),
        Accept(1, 3, c.nodes[1].promised, huge, (), 0),
        Accept(1, 3, c.nodes[1].promised, 0, (prop(1),), 0),  # slots start at 1
        Commit(1, 3, c.nodes[1].promised, huge),
        InstallSnapshot(1, 3, c.nodes[1].promised, Snapshot(huge, b""), huge),
        InstallSnapshot(1, 3, c.nodes[1].promised, Snapshot(9, b""), 3),  # past its commit
        Accepted(3, 1, c.nodes[1].promised, huge, huge),
        Nack(3, 1, Ballot(huge, 3), c.nodes[1].promised),
        Nack(3, 1, Ballot(9, 3), Ballot(minus, 1)),
        Promise(2, 1, c.nodes[1].promised, huge, (), None),
    ]
    for message in forged:
        c.nodes[message.dst].step(message)
    for i in c.ids:
        for rd in c.drive(i):
            assert not rd.entries and rd.hard_state is None and rd.snapshot is None
    assert c.nodes[1].is_leader and c.nodes[3].leader_hint == 1


def test_a_ballot_that_is_not_its_senders_is_ignored() -> None:
    # Reference: PMS §2.5 — proposers use disjoint sets of numbers: the node id in
    # a ballot names its proposer, so node 2 cannot send at node 1's ballot.
    c = Cluster(3)
    c.elect(1)
    c.deliver()
    ballot = c.nodes[1].promised
    c.nodes[3].step(Accept(2, 3, ballot, 2, (prop(9, "forged"),), 2))
    c.nodes[1].step(InstallSnapshot(2, 1, ballot, Snapshot(50, b"junk"), 50))
    c.nodes[3].step(Prepare(2, 3, Ballot(ballot.round + 9, 1), 1))
    assert not c.nodes[3].has_ready() and not c.nodes[1].has_ready()
    assert c.nodes[1].is_leader and c.nodes[1].commit_index == 0


def test_a_promise_that_does_not_hold_together_is_ignored() -> None:
    # It used to raise AssertionError ("misses committed slots") out of step().
    def b(c: Cluster) -> Ballot:
        return c.nodes[1].promised

    cases = [
        lambda c: Promise(2, 1, b(c), 1000, (), None),  # claims a commit it cannot back
        lambda c: Promise(2, 1, b(c), 3, (Entry(1, Ballot(1, 2), prop(1)),), None),
        lambda c: Promise(2, 1, b(c), 0, (), Snapshot(5, b"s")),  # snapshot past its commit
        lambda c: Promise(2, 1, b(c), 0, (Entry(2, Ballot(1, 2), prop(2)),
                                         Entry(2, Ballot(1, 2), prop(3))), None),  # slot twice
        lambda c: Promise(2, 1, b(c), 0, (Entry(1, Ballot(b(c).round + 1, 2), prop(1)),), None),
        lambda c: Promise(2, 1, b(c), 0, (Entry(2**40, Ballot(1, 2), prop(1)),), None),  # far
        lambda c: Promise(2, 1, b(c), 0, (Entry(1, Ballot(1, 2), Proposal("c", 2**63, b"")),),
                          None),
    ]
    for make in cases:
        c = Cluster(3)
        c.nodes[1].step(Nack(2, 1, Ballot(9, 2), ZERO_BALLOT))
        c.campaign(1)
        c.net.clear()
        c.nodes[1].step(make(c))
        c.drive(1)
        assert c.nodes[1].role is Role.CANDIDATE, make(c)
        # An honest promise still elects it.
        c.nodes[1].step(Promise(3, 1, b(c), 0, (), None))
        c.drive(1)
        assert c.nodes[1].is_leader


def test_an_accept_far_past_the_commit_index_is_not_stored() -> None:
    # A value for slot 2**40 would make a later leader fill 2**40 slots with
    # no-ops. Config.max_slots_ahead bounds it; the reply's match < last makes
    # the leader resend from the first missing slot.
    c = Cluster(3, max_slots_ahead=1000)
    b = Ballot(1, 1)
    node = c.nodes[3]
    node.step(Accept(1, 3, b, 995, tuple(prop(s) for s in range(995, 1005)), 0))
    (rd,) = c.drive(3)
    assert [e.slot for e in rd.entries] == list(range(995, 1001))
    assert rd.messages == [Accepted(3, 1, b, 0, 1004)]
    node.step(Accept(1, 3, b, 2**40, (prop(1),), 0))
    (rd,) = c.drive(3)
    assert not rd.entries and rd.messages == [Accepted(3, 1, b, 0, 2**40)]
    assert node.status().last_slot == 1000
    c.silence(3)
    node.step(Prepare(2, 3, Ballot(2, 2), 1))  # answered from a sparse log, at once
    (rd,) = c.drive(3)
    assert [e.slot for e in rd.messages[0].entries] == list(range(995, 1001))


def test_propose_refuses_what_the_wal_cannot_store() -> None:
    # Issue 10: a Propose with seq 2**63 killed the leader (WAL int64).
    c = Cluster(1)
    c.elect(1)
    node = c.nodes[1]
    with pytest.raises(InvalidProposal, match=r"^seq: 9223372036854775808 is over the limit of "
                                              r"4611686018427387904$"):
        node.propose(Proposal("c", 2**63, b""))
    with pytest.raises(InvalidProposal, match="^client_id: 257 bytes is over the limit of 256$"):
        node.propose(Proposal("é" * 128 + "x", 1, b""))
    with pytest.raises(InvalidProposal, match="^client_id: .* not encodable as UTF-8$"):
        node.propose(Proposal("\ud800", 1, b""))
    assert issubclass(InvalidProposal, ProposalRefused)
    assert not node.has_ready()
    node.propose(Proposal("c", MAX_SEQ, b"ok"))
    c.drive(1)
    assert c.values(1) == [Proposal("c", MAX_SEQ, b"ok")]
