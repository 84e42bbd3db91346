"""Hostile and broken peer input: random and mutated ``PeerBatch`` bytes go through
protobuf parsing, ``wire.decode_batch`` and ``Replica.step`` on a small cluster.

Checked: nothing raises but the documented ``DecodeError`` (parse) and
``MalformedMessage`` (decode); every Ready the replicas produce is encodable by the
write-ahead log (issue 10: a round or a seq of 2**63 killed nodes there); each
replica still hands its application slots in order, each once; and no slot chosen
before the hostile messages changes value on any replica (the simulator's
agreement check). Slots chosen *after* them cannot be promised: a perfect forgery
of the leader's Accept or Commit is indistinguishable from the real one; that is
authentication's job (cluster id, mTLS). Prepares and Nacks, which cannot carry a
value, are also checked to leave full agreement and a working cluster behind.
"""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paxos_cluster import Cluster, prop

from dpq.node import wire
from dpq.paxos import messages as m
from dpq.paxos import walcodec
from dpq.paxos.types import MAX_ROUND, MAX_SLOT, Ballot, Entry, Proposal, Snapshot
from dpq.v1 import replication_pb2 as pb

EXTREMES = (0, 1, 2, MAX_SLOT - 1, MAX_SLOT, MAX_SLOT + 1, 2**63 - 1, 2**63, 2**64 - 1)
u64 = st.one_of(st.integers(0, 12), st.integers(0, 12), st.sampled_from(EXTREMES),
                st.integers(0, MAX_SLOT))
node_ids = st.one_of(st.integers(0, 4), st.sampled_from((2**31, 2**32 - 1)))
rounds = st.one_of(st.integers(0, 12), st.sampled_from(EXTREMES))
ballots = st.builds(Ballot, rounds, node_ids)
proposals = st.builds(Proposal, st.text(max_size=4), u64, st.binary(max_size=8))
snapshots = st.builds(Snapshot, u64, st.binary(max_size=8))
entries = st.builds(Entry, u64, ballots, proposals)
messages = st.one_of(
    st.builds(m.Prepare, node_ids, node_ids, ballots, u64),
    st.builds(m.Promise, node_ids, node_ids, ballots, u64,
              st.lists(entries, max_size=4).map(tuple), st.none() | snapshots),
    st.builds(m.Accept, node_ids, node_ids, ballots, u64,
              st.lists(proposals, max_size=4).map(tuple), u64),
    st.builds(m.Accepted, node_ids, node_ids, ballots, u64, u64, st.booleans(), u64),
    st.builds(m.InstallSnapshot, node_ids, node_ids, ballots, snapshots, u64),
    st.builds(m.Nack, node_ids, node_ids, ballots, ballots),
    st.builds(m.Commit, node_ids, node_ids, ballots, u64),
)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Flip, insert or delete bytes at the given positions."""
    buf = bytearray(data)
    for kind, where, value in edits:
        at = where % (len(buf) + 1)
        if kind == 0 and buf:
            buf[at % len(buf)] ^= value or 1
        elif kind == 1:
            buf[at:at] = bytes([value])
        elif buf:
            del buf[at % len(buf)]
    return bytes(buf)


edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 16), st.integers(0, 255)),
                 max_size=6)


class WalCheckedCluster(Cluster):
    """Every Ready goes through the WAL's encoder, as a real driver's would."""

    def drive(self, i):
        readies = super().drive(i)
        for rd in readies:
            walcodec.encode_entries(rd.entries)
            if rd.hard_state is not None:
                walcodec.encode_hard_state(rd.hard_state)
        return readies


def running_cluster(committed: int = 4) -> WalCheckedCluster:
    c = WalCheckedCluster(3)
    c.elect(1)
    for n in range(committed):
        c.nodes[1].propose(prop(n))
    c.deliver()
    c.tick(1, 2)  # the heartbeat tells everyone the commit index
    c.deliver()
    assert all(c.nodes[i].commit_index == committed for i in c.ids)
    return c


def honest_bytes(c: Cluster) -> list[bytes]:
    """What the honest cluster sends now, one batch per message (to mutate)."""
    c.nodes[1].propose(prop(100))
    c.drive(1)
    c.tick(1, 2)
    sent = list(c.net)
    return [wire.encode_batch([msg]).SerializeToString() for msg in sent]


def aim(msg: m.Message, c: Cluster, rnd) -> m.Message:
    """Point a random message at node 1's live ballot, between members, so it reaches
    the code that acts on it (a promise for the running campaign, an Accept at the
    leader's ballot, ...) instead of being ignored as stray."""
    ballot = c.nodes[1].promised
    other = rnd.choice((2, 3))
    if isinstance(msg, (m.Promise, m.Accepted)):
        return msg._replace(src=other, dst=1, ballot=ballot)
    if isinstance(msg, m.Nack):
        return msg._replace(src=other, dst=1, rejected=ballot)
    round_ = msg.ballot.round if rnd.random() < 0.5 else ballot.round
    return msg._replace(src=1, dst=other, ballot=Ballot(round_, 1))


def parse_and_decode(data: bytes) -> list[m.Message]:
    try:
        batch = pb.PeerBatch.FromString(data)
    except DecodeError:
        return []
    try:
        return wire.decode_batch(batch)
    except wire.MalformedMessage:
        return []


def encode(batch: list[m.Message]) -> bytes | None:
    try:
        return wire.encode_batch(batch).SerializeToString()
    except ValueError:  # a value protobuf itself cannot carry (uint32 ids): not sendable
        return None


def step_all(c: Cluster, hostile: list[m.Message]) -> None:
    for msg in hostile:
        node = c.nodes.get(msg.dst, c.nodes[1])
        node.step(msg)
        c.drive(node.node_id)


def check_order_and_chosen(c: Cluster, chosen: list[Proposal]) -> None:
    for i in c.ids:
        slots = [e.slot for e in c.applied[i]]
        assert slots == list(range(1, len(slots) + 1)) or c.snapshots[i], (i, slots)
        assert [e.proposal for e in c.applied[i][:len(chosen)]] == chosen


@pytest.mark.slow
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=6), edits, st.randoms(use_true_random=False),
       st.sampled_from(("leader", "candidate")), st.booleans())
def test_random_and_mutated_batches_never_break_a_replica(batch, edit, rnd, phase, aimed):
    c = running_cluster()
    chosen = [e.proposal for e in c.applied[1]]
    blobs = honest_bytes(c)
    if phase == "candidate":  # node 1 lost its quorum and campaigns again
        c.net.clear()
        c.depose(1)
        c.campaign(1)
        c.net.clear()
    if aimed:
        batch = [aim(msg, c, rnd) for msg in batch]
    raw = encode(batch)
    candidates = [raw] if raw is not None else []
    candidates.append(mutate(rnd.choice(blobs), edit))
    if raw is not None:
        candidates.append(mutate(raw, edit))
    candidates.append(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 64))))
    for data in candidates:
        step_all(c, parse_and_decode(data))
    c.deliver()  # the honest traffic in flight, and what the hostile messages provoked
    check_order_and_chosen(c, chosen)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.builds(m.Prepare, node_ids, node_ids,
                          st.builds(Ballot, st.integers(0, MAX_ROUND - 100), node_ids), u64)
                | st.builds(m.Nack, node_ids, node_ids,
                            st.builds(Ballot, st.integers(0, MAX_ROUND - 100), node_ids),
                            ballots), min_size=1, max_size=8))
def test_forged_prepares_and_nacks_leave_agreement_and_a_working_cluster(batch):
    c = running_cluster()
    raw = encode(batch)
    step_all(c, parse_and_decode(raw) if raw is not None else [])
    c.deliver()
    for _ in range(60):  # at most a re-election: tick everyone until a leader commits
        for i in c.ids:
            c.nodes[i].tick()
        c.deliver()
        leaders = [i for i in c.ids if c.nodes[i].is_leader]
        if leaders:
            break
    assert leaders
    c.nodes[leaders[0]].propose(prop(7, "after"))
    for _ in range(3):
        c.tick(leaders[0], 2)
        c.deliver()
    values = [c.values(i) for i in c.ids]
    assert all(prop(7, "after") in v for v in values), values
    longest = max(values, key=len)
    assert all(v == longest[:len(v)] for v in values)
    check_order_and_chosen(c, [prop(n) for n in range(4)])


def test_a_round_or_a_seq_of_2_63_never_reaches_the_wal():
    # Issue 10's attacks as bytes on the wire: refused at decode, so no replica
    # (and no WAL) ever sees them; the core would ignore them anyway.
    c = running_cluster()
    ballot = c.nodes[1].promised
    attacks = [
        pb.PaxosMessage(src=2, dst=3, prepare=pb.Prepare(ballot=pb.Ballot(round=2**63, node=2))),
        pb.PaxosMessage(src=1, dst=3, accept=pb.Accept(
            ballot=pb.Ballot(round=ballot.round, node=1), first_slot=5,
            proposals=[pb.PaxosProposal(client_id="c", seq=2**63)])),
    ]
    for attack in attacks:
        data = pb.PeerBatch(messages=[attack]).SerializeToString()
        assert parse_and_decode(data) == []
    # Past the edge, the core drops them too: nothing to persist.
    c.nodes[3].step(m.Prepare(2, 3, Ballot(2**63, 2), 1))
    c.nodes[3].step(m.Accept(1, 3, ballot, 5, (Proposal("c", 2**63, b""),), 0))
    assert all(not rd.entries and rd.hard_state is None for rd in c.drive(3))
