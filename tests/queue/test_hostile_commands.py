"""Nothing committed can stop a replica, and replicas that apply the same log agree.

Whatever a slot holds — random bytes, a valid batch with bytes flipped, fields
at their extremes, commands that break the rules — ``QueueState.apply`` does
not raise, and two replicas (each with the owned-jobs view of another node,
as in a real cluster) end with the same snapshot.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.commands import (
    MEMBERS,
    MS,
    Log,
    ack,
    checkpoint,
    commands,
    enqueue,
    expire,
    extend,
    grants,
    lease,
    nack,
    reassign,
    settled,
)

from dpq.paxos.types import Proposal
from dpq.queue import rules, snapshot
from dpq.queue.commands import batch_of, stamp
from dpq.queue.owned import OwnedJobs
from dpq.queue.results import Enqueued, Refusal, Refused
from dpq.queue.state import LEASE_LOST, OK, JobState, QueueState
from dpq.v1 import log_pb2, queue_pb2

#: Snapshots written by earlier versions of the format.
DATA = Path(__file__).parent / "data"

U32, U64, I32 = 2**32 - 1, 2**64 - 1, 2**31 - 1


class Replica:
    """A state machine with the owned-jobs view of one node, fed committed slots."""

    def __init__(self, node: int) -> None:
        self.state = QueueState(members=MEMBERS)
        self.owned = OwnedJobs(node, self.state, 200 * MS)
        self.state.observer = self.owned

    def apply(self, slot: int, proposal: Proposal):
        return self.state.apply(slot, proposal)


def replay(slots: list[Proposal]) -> tuple[Replica, Replica]:
    a, b = Replica(1), Replica(2)
    for slot, proposal in enumerate(slots, start=1):
        ra, rb = a.apply(slot, proposal), b.apply(slot, proposal)
        assert repr(ra) == repr(rb)
        assert a.state.refusals == b.state.refusals
        # the rules catch it all before anything changes: no command fails half-way
        assert not [r for r in a.state.refusals if r.refused.reason == Refusal.FAILED]
    dumped = snapshot.dump(a.state)
    assert dumped == snapshot.dump(b.state)
    # what a replica holds, it can also save and load again
    again = snapshot.load(dumped, members=MEMBERS)
    assert snapshot.dump(again) == dumped
    assert again.held_bytes == a.state.held_bytes
    return a, b


# ------------------------------------------------------------------ strategies

def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(data)
    for op, at, value in edits:
        at = at % (len(out) + 1)
        if op == 0 and at < len(out):
            out[at] ^= value or 1  # flip bits
        elif op == 1:
            out[at:at] = bytes([value])  # insert a byte
        elif op == 2:
            del out[at:at + 1 + value % 4]  # delete a few
        else:
            del out[at:]  # truncate
    return bytes(out)


mutated_batches = st.builds(
    _mutate,
    st.lists(commands, min_size=1, max_size=4).map(lambda cs: batch_of(*cs)),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.integers(0, 255)),
             min_size=1, max_size=4),
)

extreme_ints = st.one_of(st.integers(0, 5), st.sampled_from([U32, U32 - 1, 2**31, 2**16]))
extreme_u64 = st.one_of(st.integers(0, 40), st.sampled_from([U64, 2**63, 2**63 - 1, 2**53]))
names = st.one_of(st.sampled_from(["", "q", "a\nb", "é", "x" * 2000, "default"]),
                  st.text(max_size=8))

extreme_commands = st.one_of(
    st.builds(
        lambda jobs, owners, window: log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
            jobs=[queue_pb2.NewJob(queue=q, priority=p, payload=b"x" * n, delay_ms=d, dedup_key=k)
                  for q, p, n, d, k in jobs], owners=owners, dedup_window_us=window)),
        st.lists(st.tuples(names, st.integers(-(2**31), I32), st.integers(0, 3), extreme_ints,
                           names), max_size=3),
        st.lists(extreme_ints, max_size=4),
        extreme_u64,
    ),
    st.builds(
        lambda node, ids, ms, receipts, consumer: log_pb2.Command(lease=log_pb2.LeaseCommand(
            node=node, job_ids=ids, lease_ms=ms, receipts=receipts, consumer_id=consumer)),
        extreme_ints, st.lists(extreme_u64, max_size=3), extreme_ints,
        st.lists(extreme_u64, max_size=3), names,
    ),
    st.builds(
        lambda kind, refs, n, flag: log_pb2.Command(**{kind: _refs_command(kind, refs, n, flag)}),
        st.sampled_from(["ack", "nack", "extend", "expire"]),
        st.lists(st.tuples(extreme_u64, extreme_ints, extreme_u64), max_size=3),
        extreme_ints, st.booleans(),
    ),
    st.builds(lambda ids, owners: reassign(ids, owners),
              st.lists(extreme_u64, max_size=3), st.lists(extreme_ints, max_size=3)),
    st.builds(checkpoint, extreme_u64),
    st.just(log_pb2.Command()),
)


def _refs_command(kind, refs, n, flag):
    jobs = [queue_pb2.JobRef(job_id=j, attempt=a, receipt=r) for j, a, r in refs]
    if kind == "ack":
        return log_pb2.AckCommand(jobs=jobs)
    if kind == "nack":
        return log_pb2.NackCommand(jobs=jobs, delay_ms=n, max_attempts=n, undelivered=flag)
    if kind == "extend":
        return log_pb2.ExtendCommand(jobs=jobs, lease_ms=n)
    return log_pb2.ExpireCommand(jobs=jobs, max_attempts=n)


# The data of one slot: a valid batch, a mutated one, random bytes or extremes.
slot_data = st.one_of(
    st.lists(commands, min_size=1, max_size=3).map(lambda cs: batch_of(*cs)),
    mutated_batches,
    st.binary(max_size=64),
    st.lists(extreme_commands, min_size=1, max_size=3).map(lambda cs: batch_of(*cs)),
)
stamps = st.one_of(st.integers(0, 2_000), st.sampled_from([-1, 2**63 - 1, -(2**63)]))


@st.composite
def logs(draw):
    slots, now, seq = [], 0, 0
    for _ in range(draw(st.integers(1, 25))):
        seq += 1
        data = draw(slot_data)
        if draw(st.integers(0, 9)) == 0:
            slots.append(Proposal("raw", seq, data))  # not even stamped
            continue
        step = draw(stamps)
        if 0 <= step <= 2_000:
            now += step
            at_us = now * MS
        else:
            at_us = step  # a broken leader clock, for this slot only
        client, s = "c1", seq
        if draw(st.integers(0, 19)) == 0:
            client, s = draw(st.sampled_from([("c1", 2**63), ("c1", U64), ("x" * 5000, 1)]))
        slots.append(Proposal(client, s, stamp(at_us, data)))
    return slots


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs())
def test_no_slot_raises_and_replicas_agree(slots):
    replay(slots)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=10))
def test_random_bytes_are_a_no_op_that_says_why(blobs):
    a, _ = replay([Proposal("c1", i + 1, blob) for i, blob in enumerate(blobs)])
    assert a.state.jobs == {} and a.state.next_job_id == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_snapshot_junk_is_a_snapshot_error_and_nothing_else(data):
    with pytest.raises(snapshot.SnapshotError):
        snapshot.load(b"DPQS\x02\x00" + data, members=MEMBERS)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), commands), max_size=12),
       st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.integers(0, 255)),
                min_size=1, max_size=3))
def test_a_mutated_snapshot_loads_or_is_a_snapshot_error(steps, edits):
    log = Log()
    now = 0
    for dt, command in steps:
        now += dt
        log.run(now, command)
    data = _mutate(snapshot.dump(log.state), edits)
    try:
        state = snapshot.load(data, members=MEMBERS)
    except snapshot.SnapshotError:
        return
    snapshot.dump(state)  # what loaded can be saved again


# ------------------------------------------------------------ structural refusals

def refused(log: Log, command, at_ms=0):
    [result] = log.run(at_ms, command)
    assert isinstance(result, Refused), result
    [(index, kind, why)] = log.state.refusals
    assert (index, why) == (0, result)
    return kind, str(result)


def test_a_checkpoint_past_its_own_slot_is_refused():
    log = Log()
    log.run(0, enqueue((1, b"a")))  # slot 1
    for written in (2**63, 2**64 - 1, None):  # None: its own slot, which it cannot vouch for
        written = log.slot + 1 if written is None else written
        kind, why = refused(log, checkpoint(written))
        assert kind == "checkpoint" and why.startswith(f"{Refusal.INVALID}: written_slot {written}")
    assert log.state.written_slot == 0 and log.state.unwritten(0) == [1]
    log.run(0, checkpoint(1))
    assert log.state.written_slot == 1 and log.state.refusals == []


def test_owners_must_match_the_jobs_and_be_members():
    log = Log()
    assert refused(log, enqueue((1, b"a"), (1, b"b"), owners=[1])) == (
        "enqueue", "invalid: 2 jobs but 1 owners")
    _, why = refused(log, enqueue((1, b"a"), owners=[9]))
    assert why == "not_member: owners [9] not among the members [1, 2, 3]"
    assert log.state.jobs == {} and log.state.next_job_id == 1 and log.state.held_bytes == 0


def test_a_lease_for_a_node_that_is_not_a_member_is_refused():
    log = Log()
    log.run(0, enqueue((1, b"a"), owners=[1]))
    kind, why = refused(log, lease(1, node=7))
    assert (kind, why) == ("lease", "not_member: node 7 not among the members [1, 2, 3]")
    assert log.state.jobs[1].state == JobState.READY


@pytest.mark.parametrize("command, reason", [
    (lease(1, receipts=[]), "invalid: 1 job ids but 0 receipts"),
    (lease(1, receipts=[0]), "invalid: a receipt of 0"),
    (lease(1, lease_ms=0), f"invalid: lease_ms 0 outside 1..{rules.MAX_LEASE_MS}"),
    (extend((1, 1), lease_ms=rules.MAX_LEASE_MS + 1),
     f"invalid: lease_ms {rules.MAX_LEASE_MS + 1} outside 1..{rules.MAX_LEASE_MS}"),
    (nack((1, 1), delay_ms=2**32 - 1),
     f"invalid: delay_ms {2**32 - 1} over the limit of {rules.MAX_DELAY_MS}"),
    (enqueue(queue_pb2.NewJob(queue="a\nb", priority=1)),
     "invalid: jobs[0].queue 'a\\nb' is not a queue name"),
    (enqueue(queue_pb2.NewJob(queue="q", priority=1, dedup_key="k" * 1025)),
     "invalid: jobs[0].dedup_key characters 1025 over the limit of 1024"),
    (reassign([1], [1, 2]), "invalid: 1 job ids but 2 owners"),
    (reassign([1], [4]), "not_member: owners [4] not among the members [1, 2, 3]"),
    (log_pb2.Command(), "unknown_command: command kind None"),
])
def test_structural_refusals_change_nothing(command, reason):
    log, twin = Log(), Log()
    for replica in (log, twin):
        replica.run(0, enqueue((1, b"a")))
        replica.run(0, lease(1))
    _, why = refused(log, command, at_ms=1)
    assert why == reason
    assert twin.run(1) == []  # the same slot with no command in it
    assert snapshot.dump(log.state) == snapshot.dump(twin.state)
    assert log.state.held_bytes == twin.state.held_bytes


def test_a_refused_command_does_not_stop_the_others_in_its_batch():
    log = Log()
    results = log.run(0, enqueue((1, b"a")), enqueue((1, b"b"), owners=[8]), enqueue((2, b"c")))
    assert results[0] == Enqueued((1,)) and results[2] == Enqueued((2,))
    assert results[1].reason == Refusal.NOT_MEMBER
    assert [(r.index, r.kind) for r in log.state.refusals] == [(1, "enqueue")]


@pytest.mark.parametrize("data, start", [
    (b"junk", "unparsable: ValueError: proposal of 4 bytes"),
    (stamp(0, b"\xff\xff\xff\xff"), "unparsable: DecodeError"),
    (stamp(-5, batch_of(enqueue((1, b"a")))), "unparsable: leader stamp -5 outside"),
    (stamp(2**63 - 1, batch_of(enqueue((1, b"a")))), f"unparsable: leader stamp {2**63 - 1}"),
])
def test_a_slot_that_does_not_decode_is_a_no_op_that_says_why(data, start):
    state = QueueState(members=MEMBERS)
    [why] = state.apply(1, Proposal("c1", 1, data))
    assert isinstance(why, Refused) and str(why).startswith(start)
    assert state.refusals == [rules.RefusalRecord(-1, "batch", why)]
    assert state.jobs == {} and state.applied_slot == 1 and state.clock_us == 0
    # a retry of the same proposal is answered the same, and applied no more
    assert state.apply(2, Proposal("c1", 1, data)) == [why]


def test_the_largest_seq_and_client_id_taken_still_fit_a_snapshot():
    state = QueueState(members=MEMBERS)
    for slot, (client, seq) in enumerate([("c1", rules.MAX_SEQ), ("é" * 512, 1)], start=1):
        assert state.apply(slot, Proposal(client, seq, stamp(0, batch_of()))) == []
    again = snapshot.load(snapshot.dump(state), members=MEMBERS)
    assert again.sessions == state.sessions


@pytest.mark.parametrize("client, seq", [("c1", rules.MAX_SEQ + 1), ("c1", 2**63),
                                         ("c1", 2**64 - 1), ("x" * 1025, 1)])
def test_a_proposal_whose_identity_cannot_be_kept_is_refused(client, seq):
    state = QueueState(members=MEMBERS)
    [why] = state.apply(1, Proposal(client, seq, stamp(0, batch_of(enqueue((1, b"a"))))))
    assert why.reason == Refusal.BAD_PROPOSAL and state.jobs == {}
    assert client not in state.sessions
    snapshot.dump(state)


def test_a_command_that_raises_is_a_deterministic_no_op(monkeypatch):
    from dpq.queue import state as state_module

    def broken(self, cmd):
        raise RuntimeError("a bug")

    monkeypatch.setitem(state_module._APPLY, "ack", broken)
    log = Log()
    log.run(0, enqueue((1, b"a")))
    results = log.run(1, ack((1, 1)), enqueue((1, b"b")))
    assert results == [Refused(Refusal.FAILED, "RuntimeError: a bug"), Enqueued((2,))]
    assert [(r.index, r.kind) for r in log.state.refusals] == [(0, "ack")]


# --------------------------------------------------------------------- receipts

def test_an_ack_without_the_right_receipt_is_lease_lost_and_the_job_stays_leased():
    log = Log()
    log.run(0, enqueue((1, b"a")))
    [job] = grants(log.run(0, lease(1, receipts=[0xABCDEF])))
    assert job.receipt == 0xABCDEF
    # (job_id, attempt) right, receipt wrong or missing
    assert log.run(1, ack((1, 1, 0xABCDEE), (1, 1, 0))) == [settled(LEASE_LOST, LEASE_LOST)]
    lost = settled(LEASE_LOST)
    assert log.run(2, extend((1, 1, 7)), nack((1, 1, 7))) == [lost, lost]
    assert log.state.jobs[1].state == JobState.LEASED
    assert log.run(4, ack((1, 1, 0xABCDEF))) == [settled(OK)]
    assert 1 not in log.state.jobs


def test_expire_quotes_the_receipt_too():
    log = Log()
    log.run(0, enqueue((1, b"a")))
    log.run(0, lease(1, lease_ms=10, receipts=[42]))
    assert log.run(20, expire((1, 1, 41))) == [settled(LEASE_LOST)]
    assert log.state.jobs[1].state == JobState.LEASED
    assert log.run(21, expire((1, 1, 42))) == [settled(OK)]
    job = log.state.jobs[1]
    assert (job.state, job.receipt) == (JobState.READY, 0)


def test_a_new_lease_has_a_new_receipt_and_snapshots_keep_it():
    log = Log()
    log.run(0, enqueue((1, b"a")))
    log.run(0, lease(1, lease_ms=10, receipts=[5]))
    log.run(20, expire((1, 1, 5)))
    log.run(30, lease(1, receipts=[6]))
    assert log.run(31, ack((1, 2, 5))) == [settled(LEASE_LOST)]
    restored = snapshot.load(snapshot.dump(log.state), members=MEMBERS)
    assert restored.jobs[1].receipt == 6 and restored.jobs[1] == log.state.jobs[1]


# ------------------------------------------------------------------ memory cost

def test_held_bytes_count_jobs_dedup_keys_and_queues_and_go_back_to_zero():
    from dpq.queue.state import DEDUP_OVERHEAD, JOB_OVERHEAD, QUEUE_OVERHEAD

    log = Log()
    jobs = [queue_pb2.NewJob(queue="long" * 30, priority=1, payload=b"p" * 10, dedup_key=f"k{i}")
            for i in range(3)]
    expected = log.state.cost_of(jobs, 1000 * MS)
    assert expected == (3 * (JOB_OVERHEAD + 10) + 3 * (DEDUP_OVERHEAD + 2)
                        + QUEUE_OVERHEAD + 120)
    log.run(0, enqueue(*jobs, dedup_window_ms=1000))
    assert log.state.held_bytes == expected
    # one queue name object for every job of the queue
    assert len({id(j.queue) for j in log.state.jobs.values()}) == 1
    log.run(1, lease(1, 2, 3))
    log.run(2, ack((1, 1), (2, 1), (3, 1)))
    assert log.state.held_bytes == 3 * (DEDUP_OVERHEAD + 2)  # the keys are still remembered
    assert log.state.counts == {} and log.state.queues() == []
    log.run(1000, checkpoint(1))  # any slot after the window prunes the keys
    assert log.state.held_bytes == 0 and log.state.dedup == {}


def test_a_version_1_snapshot_still_loads_without_receipts():
    # Written by the version-1 format: one READY job with payload b"a".
    v1 = (DATA / "snapshot-v1.bin").read_bytes()
    assert v1[4:6] == b"\x01\x00"
    state = snapshot.load(v1, members=MEMBERS)
    assert [(j.job_id, j.priority, j.payload, j.receipt) for j in state.jobs.values()] == [
        (1, 2, b"a", 0)]


def test_a_version_2_snapshot_still_loads_and_is_saved_again_as_the_current_version():
    # Written by version 2 (dedup keys and touched jobs in its JSON part): three jobs
    # of queue q (job 1 leased), job 4 of queue "other" with dedup key k1.
    v2 = (DATA / "snapshot-v2.bin").read_bytes()
    assert v2[4:6] == b"\x02\x00"
    state = snapshot.load(v2, members=MEMBERS)
    assert sorted(state.jobs) == [1, 2, 3, 4] and state.applied_slot == 3
    assert state.jobs[1].state == JobState.LEASED and state.jobs[1].receipt != 0
    assert state.dedup == {("other", "k1"): (4, 60_002_000)}
    assert state.touched_items() == [(1, 2), (2, 1), (3, 1), (4, 3)]
    current = snapshot.dump(state)
    assert current[4:6] == snapshot.VERSION.to_bytes(2, "little")
    again = snapshot.load(current, members=MEMBERS)
    assert again.jobs == state.jobs and again.dedup == state.dedup
    assert again.touched_items() == state.touched_items()

def test_a_version_3_snapshot_still_loads_without_the_fields_of_version_4():
    # Written by version 3: jobs 1, 2 of queue q (2 delayed), job 3 of "mail" leased
    # by w1, the dedup key k1 of job 1; no dedup keys on jobs, no errors, no pauses.
    v3 = (DATA / "snapshot-v3.bin").read_bytes()
    assert v3[4:6] == b"\x03\x00"
    state = snapshot.load(v3, members=MEMBERS)
    assert [(j.job_id, j.queue, j.payload, j.state, j.receipt, j.dedup_key, j.last_error,
             j.cancel_requested) for j in state.jobs.values()] == [
        (1, "q", b"a", JobState.READY, 0, "", "", False),
        (2, "q", b"bb", JobState.READY, 0, "", "", False),
        (3, "mail", b"ccc", JobState.LEASED, 77, "", "", False)]
    assert state.dedup == {("q", "k1"): (1, 60_000_000)} and state.paused == {}
    again = snapshot.load(snapshot.dump(state), members=MEMBERS)
    assert again.jobs == state.jobs
