"""The replicated queue state machine: commands in, deterministic state out."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.commands import (
    MEMBERS,
    MS,
    Log,
    Recorder,
    ack,
    checkpoint,
    commands,
    enqueue,
    enqueued,
    expire,
    extend,
    grants,
    lease,
    nack,
    reassign,
    settled,
)

from dpq.paxos.types import NOOP
from dpq.queue.results import Leased, Reassigned, Refusal, Refused
from dpq.queue.state import LEASE_LOST, NOT_FOUND, OK, JobState, QueueState
from dpq.v1 import queue_pb2


def test_enqueue_assigns_ids_in_log_order_and_stamps_leader_time():
    log = Log()
    assert log.run(100, enqueue((3, b"a"), (1, b"b"))) == [enqueued(1, 2)]
    assert log.run(50, enqueue((5, b"c"))) == [enqueued(3)]  # a slower leader clock cannot go back
    job = log.state.jobs[3]
    assert (job.created_at_us, job.ready_at_us, job.state) == (100 * MS, 100 * MS, JobState.READY)
    assert log.state.stats("q", 100 * MS) == ([1, 0, 1, 0, 1], 0, 0, 0)


def test_empty_queue_name_is_the_default_queue():
    log = Log()
    log.run(0, enqueue(queue_pb2.NewJob(priority=2, payload=b"x")))
    assert log.state.jobs[1].queue == "default" and log.state.queues() == ["default"]


def test_a_malformed_batch_is_refused_whole_on_every_replica():
    log = Log()
    bad = enqueue((1, b"ok"), (9, b"bad"))
    assert log.run(0, bad) == [Refused(Refusal.INVALID, "jobs[1].priority 9 outside 1..5")]
    assert log.state.jobs == {} and log.state.next_job_id == 1


def test_dedup_key_returns_the_first_id_within_the_window():
    log = Log()
    job = queue_pb2.NewJob(queue="q", priority=1, payload=b"x", dedup_key="k")
    assert log.run(0, enqueue(job, job, dedup_window_ms=1000)) == [enqueued(1, 1)]
    assert log.run(999, enqueue(job, dedup_window_ms=1000)) == [enqueued(1)]
    assert log.run(1000, enqueue(job, dedup_window_ms=1000)) == [enqueued(2)]  # window over
    assert sorted(log.state.jobs) == [1, 2]


def test_lease_grants_due_owned_ready_jobs_and_counts_the_attempt():
    log = Log()
    log.run(0, enqueue((1, b"a"), (1, b"b"), (1, b"c"), owners=[1, 1, 2]))
    log.run(0, enqueue(queue_pb2.NewJob(queue="q", priority=1, delay_ms=500)))
    granted = grants(log.run(10, lease(1, 3, 4, 99, node=1, lease_ms=200, consumer="w1")))
    # job 3 belongs to node 2, job 4 is not due until t=500 ms, 99 does not exist
    assert [j.job_id for j in granted] == [1]
    first = granted[0]
    assert (first.attempt, first.lease_expires_at_us) == (1, 210 * MS)
    assert log.state.jobs[1].consumer_id == "w1"
    assert grants(log.run(20, lease(1, node=1))) == []  # already leased
    assert log.state.stats("q", 20 * MS) == ([2, 0, 0, 0, 0], 1, 1, 0)
    assert log.state.stats("q", 500 * MS) == ([3, 0, 0, 0, 0], 0, 1, 0)


def test_ack_takes_the_current_lease_only():
    log = Log()
    log.run(0, enqueue((1, b"a"), (1, b"b")))
    log.run(0, lease(1, 2))
    assert log.run(1, ack((1, 1), (2, 7), (42, 1))) == [settled(OK, LEASE_LOST, NOT_FOUND)]
    assert 1 not in log.state.jobs and log.state.jobs[2].state == JobState.LEASED
    assert log.run(2, ack((1, 1))) == [settled(NOT_FOUND)]  # acked twice: gone


def test_stale_ack_after_redelivery_is_refused():
    log = Log()
    log.run(0, enqueue((1, b"a")))
    log.run(0, lease(1, lease_ms=100))
    assert log.run(150, expire((1, 1))) == [settled(OK)]
    [job] = grants(log.run(160, lease(1, consumer="second")))
    assert job.attempt == 2
    assert log.run(170, ack((1, 1))) == [settled(LEASE_LOST)]  # the first consumer lost it
    assert log.run(171, ack((1, 2))) == [settled(OK)]


def test_a_lease_result_says_what_was_granted_whatever_happens_to_the_job_later():
    # In the same batch (a Lease then an Ack of it), and for a retry of the Lease
    # answered from the remembered results after the job was leased again: the
    # grant keeps its own attempt and receipt, never the job's later ones.
    log = Log()
    log.run(0, enqueue((1, b"a"), (1, b"b")))
    [leased, acked] = log.run(1, lease(1, receipts=[11]), ack((1, 1, 11)), seq=7)
    assert [(j.job_id, j.attempt, j.receipt) for j in leased.grants] == [(1, 1, 11)]
    assert acked == settled(OK) and 1 not in log.state.jobs
    [first] = grants(log.run(2, lease(2, lease_ms=100, receipts=[21]), seq=8))
    assert log.run(150, expire((2, 1, 21))) == [settled(OK)]
    log.run(160, lease(2, consumer="second", receipts=[22]), seq=9)
    [again] = grants(log.run(170, lease(2, receipts=[21]), seq=8))  # a retry of seq 8
    assert (again.attempt, again.receipt) == (first.attempt, first.receipt) == (1, 21)
    assert (log.state.jobs[2].attempt, log.state.jobs[2].receipt) == (2, 22)


def test_expire_refuses_a_lease_that_was_extended():
    log = Log()
    log.run(0, enqueue((1, b"a")))
    log.run(0, lease(1, lease_ms=100))
    assert log.run(50, extend((1, 1), lease_ms=1000)) == [settled(OK)]
    assert log.run(150, expire((1, 1))) == [settled(LEASE_LOST)]
    assert log.state.jobs[1].state == JobState.LEASED
    assert log.state.jobs[1].lease_expires_at_us == 1050 * MS


def test_nack_with_delay_then_dead_after_max_attempts():
    log = Log()
    log.run(0, enqueue((2, b"a")))
    for attempt in (1, 2):
        [job] = grants(log.run(attempt * 1000, lease(1)))
        assert job.attempt == attempt
        assert log.run(attempt * 1000 + 1,
                       nack((1, attempt), delay_ms=300, max_attempts=3)) == [settled(OK)]
        assert log.state.jobs[1].ready_at_us == (attempt * 1000 + 301) * MS
        assert log.run(attempt * 1000 + 2, lease(1)) == [Leased(())]  # not due yet
    log.run(5000, lease(1))
    assert log.run(5001, nack((1, 3), max_attempts=3)) == [settled(OK)]
    assert log.state.jobs[1].state == JobState.DEAD
    assert log.state.stats("q", 6000 * MS) == ([0] * 5, 0, 0, 1)
    assert log.run(6000, lease(1)) == [Leased(())]  # dead jobs are never delivered


def test_expired_lease_at_max_attempts_goes_dead():
    log = Log()
    log.run(0, enqueue((1, b"a")))
    log.run(0, lease(1, lease_ms=10))
    assert log.run(20, expire((1, 1), max_attempts=1)) == [settled(OK)]
    assert log.state.jobs[1].state == JobState.DEAD


def test_reassign_moves_owner_and_tells_observers():
    recorder = Recorder()
    log = Log(QueueState(recorder, members=MEMBERS))
    log.run(0, enqueue((1, b"a"), (1, b"b"), owners=[1, 2]))
    assert log.run(1, reassign([1, 2, 77], [3, 2, 3])) == [Reassigned(1)]
    assert log.state.jobs[1].owner == 3 and log.state.jobs[2].owner == 2
    assert recorder.events[-1] == (1, 1, 3, JobState.READY, JobState.READY)
    # the old owner can no longer lease it
    assert log.run(2, lease(1, node=1)) == [Leased(())]
    assert [j.job_id for j in grants(log.run(3, lease(1, node=3)))] == [1]


def test_a_retried_proposal_is_applied_once_and_answered_again():
    log = Log()
    first = log.run(0, enqueue((1, b"a"), (2, b"b")), seq=7)
    again = log.run(5, enqueue((1, b"a"), (2, b"b")), seq=7)
    assert first == again == [enqueued(1, 2)]
    assert len(log.state.jobs) == 2


def test_noop_changes_nothing_but_the_applied_slot():
    state = QueueState(members=MEMBERS)
    assert state.apply(1, NOOP) is None
    assert state.applied_slot == 1 and state.jobs == {}
    with pytest.raises(ValueError, match="applied twice"):
        state.apply(1, NOOP)


def test_unwritten_jobs_until_a_checkpoint_covers_them():
    log = Log()
    log.run(0, enqueue((1, b"a"), (1, b"b")))  # slot 1
    log.run(0, lease(1))  # slot 2
    assert sorted(log.state.unwritten(0)) == [1, 2]
    assert log.state.unwritten(2) == []
    log.run(0, checkpoint(1))  # slot 3: the writer has slot 1 in PostgreSQL
    assert sorted(log.state.unwritten(0)) == [1]  # job 1 changed again in slot 2
    log.run(0, checkpoint(2))
    assert log.state.unwritten(0) == []


# ---------------------------------------------------------------- properties

def recount(state: QueueState, now_us: int) -> dict:
    """Stats computed from the jobs themselves, the slow and obvious way."""
    out: dict[str, dict] = {}
    for job in state.jobs.values():
        q = out.setdefault(job.queue, {"ready": [0] * 5, "delayed": 0, "leased": 0, "dead": 0})
        if job.state == JobState.READY and job.ready_at_us > now_us:
            q["delayed"] += 1
        elif job.state == JobState.READY:
            q["ready"][job.priority - 1] += 1
        elif job.state == JobState.LEASED:
            q["leased"] += 1
        elif job.state == JobState.DEAD:
            q["dead"] += 1
    return {name: (q["ready"], q["delayed"], q["leased"], q["dead"]) for name, q in out.items()}


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), commands), max_size=40))
def test_replicas_agree_and_counters_match_the_jobs(steps):
    a, b = Log(), Log()
    now = 0
    acked = Counter()
    for dt, command in steps:
        now += dt
        ra, rb = a.run(now, command), b.run(now, command)
        assert repr(ra) == repr(rb)
        if command.WhichOneof("kind") == "ack":
            acked.update(i for (i, r) in zip([x.job_id for x in command.ack.jobs],
                                             ra[0].outcomes) if r == OK)
        assert {k: j.as_tuple() for k, j in a.state.jobs.items()} == {
            k: j.as_tuple() for k, j in b.state.jobs.items()
        }
        for queue, expected in recount(a.state, now * MS).items():
            assert a.state.stats(queue, now * MS) == expected
        for queue in {j.queue for j in a.state.jobs.values()}:
            owners = Counter(j.owner for j in a.state.jobs.values()
                             if j.queue == queue and j.state == JobState.READY)
            assert a.state.ready_backlogs(queue) == dict(owners)
        # every job is READY, LEASED, DEAD or CANCELLED; a leased job holds a real
        # attempt; only a leased job waits to be cancelled
        for job in a.state.jobs.values():
            assert job.state in (JobState.READY, JobState.LEASED, JobState.DEAD,
                                 JobState.CANCELLED)
            assert job.state != JobState.LEASED or job.attempt >= 1
            assert not job.cancel_requested or job.state == JobState.LEASED
        for queue in {j.queue for j in a.state.jobs.values()}:
            cancelled = sum(1 for j in a.state.jobs.values()
                            if j.queue == queue and j.state == JobState.CANCELLED)
            assert a.state.counts[queue].cancelled == cancelled
        assert a.state.cancelled_kept == sum(
            1 for j in a.state.jobs.values() if j.state == JobState.CANCELLED)
        assert a.state.paused == b.state.paused
    assert all(n == 1 for n in acked.values())  # no job acked twice
    assert not set(acked) & set(a.state.jobs)  # acked jobs are gone


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 400), commands), max_size=25),
    st.lists(st.tuples(st.integers(0, 400), commands), max_size=15),
)
def test_a_snapshot_restores_a_replica_that_then_stays_in_step(before, after):
    from dpq.queue import snapshot

    a = Log()
    now = 0
    for dt, command in before:
        now += dt
        a.run(now, command)
    b = Log(snapshot.load(snapshot.dump(a.state), members=MEMBERS))
    b.slot, b.seq = a.slot, a.seq
    assert snapshot.dump(b.state) == snapshot.dump(a.state)
    for dt, command in after:
        now += dt
        assert repr(a.run(now, command)) == repr(b.run(now, command))
    assert snapshot.dump(b.state) == snapshot.dump(a.state)
    for queue in a.state.queues():
        assert a.state.stats(queue, now * MS) == b.state.stats(queue, now * MS)
    assert a.state.paused == b.state.paused


def test_snapshot_refuses_foreign_bytes():
    from dpq.queue import snapshot

    with pytest.raises(snapshot.SnapshotError,
                       match=f"not a version 1-{snapshot.VERSION} dpq snapshot"):
        snapshot.load(b"NOPE" + bytes(20))
    with pytest.raises(snapshot.SnapshotError, match="too short"):
        snapshot.load(b"DP")


def test_an_undelivered_lease_is_given_back_without_costing_an_attempt():
    log = Log()
    log.run(0, enqueue((1, b"a")))
    log.run(0, lease(1))
    assert log.run(1, nack((1, 1), max_attempts=1, undelivered=True)) == [settled(OK)]
    job = log.state.jobs[1]
    assert (job.state, job.attempt) == (JobState.READY, 0)  # not dead, attempt restored
    [again] = grants(log.run(2, lease(1)))
    assert again.attempt == 1
