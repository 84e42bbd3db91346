"""The operators' views the state machine keeps as it applies: the age of the oldest
ready job per queue and priority (``dpq.queue.ages``) and the counts since start
(``dpq.queue.totals``)."""

from __future__ import annotations

from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from support.commands import (
    MEMBERS,
    MS,
    Log,
    ack,
    cancel,
    commands,
    enqueue,
    expire,
    lease,
    nack,
    retry,
    set_priority,
)

from dpq.paxos.types import Proposal
from dpq.queue import ages, snapshot
from dpq.queue.results import Enqueued, Leased, Settled
from dpq.queue.state import JobState, QueueState
from dpq.queue.totals import MAX_TRACKED_QUEUES, OTHER_QUEUE, WAIT_BUCKETS_US
from dpq.v1 import queue_pb2

PRIORITIES = range(1, 6)


def oldest_by_recount(state: QueueState) -> dict[tuple[str, int], int]:
    """(queue, priority) -> the smallest ready time of its READY jobs, from the jobs."""
    out: dict[tuple[str, int], int] = {}
    for job in state.jobs.values():
        if job.state == JobState.READY:
            key = (job.queue, job.priority)
            out[key] = min(out.get(key, job.ready_at_us), job.ready_at_us)
    return out


def live_by_recount(state: QueueState) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for job in state.jobs.values():
        if job.state == JobState.READY:
            out[(job.queue, job.priority)] = out.get((job.queue, job.priority), 0) + 1
    return out


def assert_bounded(state: QueueState) -> None:
    live = live_by_recount(state)
    for key, size in state.ages.lane_sizes().items():
        assert size <= 2 * live.get(key, 0) + ages.SLACK, (key, size, live)
    for queue, _ in state.ages.lane_sizes():  # a forgotten queue dropped its lanes
        assert queue in state.counts


def assert_ages_match(state: QueueState, now_us: int) -> None:
    expected = oldest_by_recount(state)
    for queue in ("a", "b"):
        for p in PRIORITIES:
            ready_at = expected.get((queue, p))
            assert state.ages.oldest_ready_at(queue, p) == ready_at
            due_age = 0 if ready_at is None or ready_at > now_us else now_us - ready_at
            assert state.ages.age_us(queue, p, now_us) == due_age


def run_and_check(steps, query_every_step: bool) -> Log:
    log = Log()
    now = 0
    delivered = acked = 0
    for dt, command in steps:
        now += dt
        [result] = log.run(now, command)
        if isinstance(result, Leased):
            delivered += len(result.grants)
        elif isinstance(result, Settled) and command.WhichOneof("kind") == "ack":
            acked += sum(1 for r in result.outcomes if r is None)
        assert_bounded(log.state)
        if query_every_step:
            assert_ages_match(log.state, now * MS)
    assert_bounded(log.state)
    assert_ages_match(log.state, now * MS)
    totals = log.state.totals.queues
    assert sum(sum(t.enqueued) for t in totals.values()) == log.state.next_job_id - 1
    assert sum(sum(t.delivered) for t in totals.values()) == delivered
    assert sum(sum(t.acked) for t in totals.values()) == acked
    return log


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), commands), max_size=40), st.booleans(),
       st.sampled_from([0, 1, ages.SLACK]))
def test_oldest_ready_age_equals_a_recount_and_the_heaps_stay_bounded(steps, query, slack):
    # a small slack makes the heaps compact often, so compaction is checked too
    with mock.patch.object(ages, "SLACK", slack):
        run_and_check(steps, query)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), commands), max_size=25),
       st.lists(st.tuples(st.integers(0, 400), commands), max_size=15))
def test_a_snapshot_rebuilds_the_ages_and_keeps_the_counts(before, after):
    a = Log()
    now = 0
    for dt, command in before:
        now += dt
        a.run(now, command)
    b = Log(QueueState(members=MEMBERS))
    b.run(0, enqueue((1, b"x")))  # counts of its own before it loads the snapshot
    b.state.adopt(snapshot.load(snapshot.dump(a.state), members=MEMBERS))
    assert sum(b.state.totals.of("q").enqueued) == 1  # kept across the load
    b.slot, b.seq = a.slot, a.seq
    assert_ages_match(b.state, now * MS)
    for dt, command in after:
        now += dt
        a.run(now, command)
        b.run(now, command)
        assert_ages_match(b.state, now * MS)
        assert_bounded(b.state)


def test_entries_of_jobs_gone_do_not_pile_up_when_nobody_asks():
    log = Log()
    for i in range(1, 5001):
        [[job_id]] = [r.job_ids for r in log.run(i, enqueue((1, b"")))]
        log.run(i, lease(job_id))
        log.run(i, ack((job_id, 1)))
        if i == 2500:
            log.run(i, enqueue((1, b"stuck")))  # one old job stays READY throughout
    assert log.state.ages.entries() <= 2 * 1 + ages.SLACK
    assert log.state.ages.oldest_ready_at("q", 1) == 2500 * MS


def test_age_of_the_oldest_due_ready_job_per_priority():
    log = Log()
    log.run(100, enqueue((1, b"a"), (1, b"b"), (3, b"c")))  # jobs 1-3 ready at 100 ms
    log.run(200, enqueue(queue_pb2.NewJob(queue="q", priority=2, delay_ms=500)))  # due at 700
    age = log.state.ages.age_us
    assert [age("q", p, 300 * MS) for p in PRIORITIES] == [200 * MS, 0, 200 * MS, 0, 0]
    assert age("q", 2, 800 * MS) == 100 * MS  # due since 700 ms
    log.run(400, lease(1))  # the oldest priority-1 job leaves: job 2 is as old
    assert age("q", 1, 500 * MS) == 400 * MS
    log.run(400, lease(2))
    assert age("q", 1, 500 * MS) == 0
    log.run(450, set_priority(1, job_ids=[3]))  # moves with its ready time
    assert (age("q", 1, 500 * MS), age("q", 3, 500 * MS)) == (400 * MS, 0)
    log.run(500, nack((1, 1), delay_ms=0))  # ready again now
    assert age("q", 1, 600 * MS) == 500 * MS  # job 3 (ready at 100) is still the oldest
    log.run(600, cancel(job_ids=[3]))
    assert age("q", 1, 700 * MS) == 200 * MS  # job 1, ready again at 500
    log.run(700, retry(job_ids=[3]))  # ready anew at 700
    assert age("q", 1, 1000 * MS) == 500 * MS


def test_counts_since_start_by_queue_and_priority():
    log = Log()
    log.run(0, enqueue((1, b""), (1, b""), (3, b""), (5, b"")))  # jobs 1-4
    log.run(30, lease(1, 2, 3, 4, lease_ms=100))
    log.run(40, ack((1, 1)))
    log.run(40, nack((2, 1), max_attempts=1))  # dies: 1 attempt allowed
    log.run(40, nack((3, 1)))
    log.run(200, expire((4, 1)))
    log.run(300, cancel(job_ids=[3, 4]))
    totals = log.state.totals.of("q")
    assert totals.enqueued == [2, 0, 1, 0, 1]
    assert totals.delivered == [2, 0, 1, 0, 1]
    assert totals.acked == [1, 0, 0, 0, 0]
    assert (totals.nacked, totals.expired, totals.died, totals.cancelled) == (2, 1, 1, 2)
    # four first deliveries, each after 30 ms: the 50 ms bucket
    bucket = WAIT_BUCKETS_US.index(50_000)
    first = log.state.totals.first_wait
    assert [first[p - 1].counts[bucket] for p in PRIORITIES] == [2, 0, 1, 0, 1]
    assert [first[p - 1].total for p in PRIORITIES] == [60 * MS, 0, 30 * MS, 0, 30 * MS]
    assert first[0].cumulative(1e6)[bucket - 1:bucket + 2] == [
        ("0.025", 0), ("0.05", 2), ("0.1", 2)]
    log.run(400, lease(3, 4))  # cancelled: not served
    log.run(400, retry(job_ids=[3]))
    log.run(500, lease(3))  # a fresh budget: a first delivery again, 100 ms after ready
    assert first[2].counts[WAIT_BUCKETS_US.index(100_000)] == 1
    assert totals.delivered == [2, 0, 2, 0, 1]


def test_an_undelivered_lease_given_back_is_not_a_nack():
    log = Log()
    log.run(0, enqueue((1, b"")))
    log.run(0, lease(1))
    log.run(0, nack((1, 1), undelivered=True))
    totals = log.state.totals.of("q")
    assert (totals.nacked, totals.expired, totals.delivered[0]) == (0, 0, 1)


def test_counts_survive_the_queue_being_forgotten():
    log = Log()
    log.run(0, enqueue((2, b"")))
    log.run(0, lease(1))
    log.run(0, ack((1, 1)))
    assert "q" not in log.state.counts and log.state.queues() == []  # forgotten
    assert log.state.ages.entries() == 0
    assert log.state.totals.get("q").acked == [0, 1, 0, 0, 0]


def test_queues_past_the_tracked_limit_are_counted_together():
    log = Log()
    names = [f"q{i}" for i in range(MAX_TRACKED_QUEUES + 5)]
    for name in names:
        log.run(0, enqueue(queue_pb2.NewJob(queue=name, priority=1)))
    totals = log.state.totals
    assert len(totals.queues) == MAX_TRACKED_QUEUES + 1
    assert totals.get(names[-1]) is None
    assert totals.get(OTHER_QUEUE).enqueued == [5, 0, 0, 0, 0]
    assert sum(t.enqueued[0] for t in totals.queues.values()) == len(names)


def test_reset_keeps_the_counts_and_forgets_the_ages():
    log = Log()
    log.run(0, enqueue((1, b"")))
    log.state.reset()
    assert log.state.ages.entries() == 0
    assert log.state.totals.of("q").enqueued == [1, 0, 0, 0, 0]


def test_a_slot_refused_whole_counts_nothing():
    log = Log()
    result = log.state.apply(1, Proposal("c", 1, b"\x01junk"))
    assert not isinstance(result[0], Enqueued)
    assert log.state.totals.queues == {}
