"""The operators' commands on the state machine: Cancel, Retry, SetPriority, Pause,
Resume, Purge, and the error a Nack leaves on its job."""

from __future__ import annotations

from support.commands import (
    MS,
    Log,
    ack,
    cancel,
    enqueue,
    expire,
    grants,
    lease,
    nack,
    pause,
    purge,
    resume,
    retry,
    set_priority,
    settled,
)

from dpq.queue import operators, snapshot
from dpq.queue.owned import OwnedJobs
from dpq.queue.results import Affected, Paused, Refusal, Refused
from dpq.queue.state import JobState
from dpq.v1 import log_pb2, queue_pb2


def _log_with(n, priority=3, owners=None):
    log = Log()
    log.run(0, enqueue(*[(priority, b"x%d" % i) for i in range(n)], owners=owners))
    return log


def _dead(log, job_id, at_ms=10):
    """Lease ``job_id`` and let its one allowed attempt run out: DEAD."""
    log.run(at_ms, lease(job_id, lease_ms=1))
    log.run(at_ms + 5, expire((job_id, 1), max_attempts=1))
    assert log.state.jobs[job_id].state == JobState.DEAD


def test_cancel_removes_ready_delayed_and_dead_jobs_and_marks_leased_ones():
    log = Log()
    log.run(0, enqueue((1, b"a"), (1, b"b"), queue_pb2.NewJob(queue="q", priority=1,
                                                                delay_ms=60_000)))
    log.run(0, enqueue((2, b"d"), (2, b"e")))  # 4: to be dead, 5: to be leased
    _dead(log, 4)
    assert grants(log.run(20, lease(5)))
    [result] = log.run(30, cancel(queue="q"))
    assert result == Affected(4, 1)  # 1, 2, 3 (delayed), 4 (dead); 5 is leased
    jobs = log.state.jobs
    assert [jobs[i].state for i in (1, 2, 3, 4)] == [JobState.CANCELLED] * 4
    assert jobs[5].state == JobState.LEASED and jobs[5].cancel_requested
    ready, delayed, leased, dead = log.state.stats("q", 30 * MS)
    assert (ready, delayed, leased, dead) == ([0] * 5, 0, 1, 0)
    assert log.state.counts["q"].cancelled == 4
    # a second cancel changes nothing new
    assert log.run(31, cancel(queue="q")) == [Affected(0, 0)]


def test_a_leased_job_cancelled_is_cancelled_when_its_lease_ends_but_its_ack_still_counts():
    log = _log_with(2)
    log.run(1, lease(1, 2))
    log.run(2, cancel(job_ids=[1, 2]))
    assert log.run(3, ack((1, 1))) == [settled(None)]
    assert 1 not in log.state.jobs and log.state.finished[1][0] == JobState.GONE
    log.run(4, nack((2, 1)))
    assert log.state.jobs[2].state == JobState.CANCELLED
    assert not log.state.jobs[2].cancel_requested


def test_retry_brings_dead_and_cancelled_jobs_back_with_a_fresh_attempt_budget():
    log = _log_with(3)
    _dead(log, 1)
    log.run(20, cancel(job_ids=[2]))
    [result] = log.run(30, retry(queue="q"))
    assert result == Affected(2)  # 1 (dead) and 2 (cancelled); 3 was ready all along
    for job_id in (1, 2):
        job = log.state.jobs[job_id]
        assert (job.state, job.attempt, job.ready_at_us) == (JobState.READY, 0, 30 * MS)
    assert log.state.stats("q", 30 * MS) == ([0, 0, 3, 0, 0], 0, 0, 0)
    assert log.state.cancelled_kept == 0
    # the fresh budget: one more expiry with max_attempts=1 kills it again, not sooner
    log.run(40, lease(1, lease_ms=1))
    assert log.state.jobs[1].attempt == 1


def test_retry_by_state_redrives_only_the_dead():
    log = _log_with(3)
    _dead(log, 1)
    log.run(20, cancel(job_ids=[2]))
    assert log.run(30, retry(queue="q", state=queue_pb2.DEAD)) == [Affected(1)]
    assert log.state.jobs[2].state == JobState.CANCELLED


def test_set_priority_moves_queued_jobs_and_keeps_their_place_in_time():
    log = Log()
    owned = OwnedJobs(1, log.state, aging_step_us=0)
    log.state.observer = owned
    log.run(0, enqueue(*[(5, b"low%d" % i) for i in range(3)]))  # 1..3 at priority 5
    log.run(10, enqueue(*[(2, b"mid%d" % i) for i in range(3)]))  # 4..6 at priority 2
    [result] = log.run(20, set_priority(1, queue="q", priority=5))
    assert result == Affected(3)
    assert log.state.stats("q", 20 * MS)[0] == [3, 3, 0, 0, 0]
    # strict priority: the re-prioritised backlog now goes first, oldest first
    assert owned.reserve("q", 6, 20 * MS) == [1, 2, 3, 4, 5, 6]
    assert [log.state.jobs[i].ready_at_us for i in (1, 2, 3)] == [0, 0, 0]


def test_set_priority_on_delayed_jobs_keeps_the_delay_counters_right():
    log = Log()
    log.run(0, enqueue(queue_pb2.NewJob(queue="q", priority=4, delay_ms=100)))
    log.run(1, set_priority(2, job_ids=[1]))
    assert log.state.stats("q", 1 * MS) == ([0] * 5, 1, 0, 0)
    assert log.state.stats("q", 200 * MS) == ([0, 1, 0, 0, 0], 0, 0, 0)


def test_a_paused_queue_leases_nothing_until_resumed_and_other_queues_flow():
    log = Log()
    log.run(0, enqueue((1, b"a"), queue_pb2.NewJob(queue="other", priority=1)))
    assert log.run(1, pause("q")) == [Paused("q", True, 0, False)]
    assert grants(log.run(2, lease(1))) == []
    assert [g.job_id for g in grants(log.run(3, lease(2)))] == [2]
    assert log.state.is_paused("q", 10**12) and "q" in log.state.queues()
    assert log.run(4, resume("q")) == [Paused("q", False, 0, True)]
    assert [g.job_id for g in grants(log.run(5, lease(1)))] == [1]


def test_a_timed_pause_ends_by_itself():
    log = _log_with(1)
    assert log.run(0, pause("q", duration_ms=100)) == [Paused("q", True, 100 * MS, False)]
    assert grants(log.run(50, lease(1))) == []
    assert [g.job_id for g in grants(log.run(100, lease(1)))] == [1]
    assert log.state.paused == {}


def test_purge_removes_everything_not_leased():
    log = _log_with(4)
    _dead(log, 1)
    log.run(20, lease(2))
    log.run(21, cancel(job_ids=[3]))
    assert log.run(22, purge("q")) == [Affected(3)]  # 1 dead, 3 cancelled, 4 ready
    assert sorted(log.state.jobs) == [2]
    assert log.state.finished[4][0] == JobState.CANCELLED
    assert log.state.cancelled_kept == 0
    assert log.state.unwritten(0) == [1, 2, 3, 4]  # the writer deletes the rows


def test_the_oldest_cancelled_jobs_are_evicted_past_the_limit(monkeypatch):
    monkeypatch.setattr(operators, "MAX_CANCELLED_KEPT", 2)
    log = _log_with(4)
    log.run(1, cancel(job_ids=[3, 1]))
    log.run(2, cancel(job_ids=[2, 4]))
    assert sorted(log.state.jobs) == [3, 4]  # the two smallest ids went
    assert log.state.cancelled_kept == 2 and log.state.counts["q"].cancelled == 2
    assert log.state.finished[1][0] == JobState.CANCELLED


def test_a_nack_keeps_its_error_and_an_expiry_says_so():
    log = _log_with(2)
    log.run(1, lease(1, 2, lease_ms=5))
    nacked = log_pb2.Command(nack=log_pb2.NackCommand(
        jobs=[queue_pb2.JobRef(job_id=1, attempt=1, receipt=0xD0_0000_0001)],
        max_attempts=3, error="ValueError: bad row 7"))
    log.run(2, nacked)
    log.run(10, expire((2, 1)))
    assert log.state.jobs[1].last_error == "ValueError: bad row 7"
    assert log.state.jobs[2].last_error == "lease expired"


def test_bad_operator_commands_are_refused_whole_and_change_nothing():
    log = _log_with(2)
    before = {k: j.as_tuple() for k, j in log.state.jobs.items()}
    cases = [
        cancel(),  # selects everything without all
        retry(priority=9),
        set_priority(0, job_ids=[1]),
        set_priority(2, state=99),
        pause("bad queue!"),
        pause("q", duration_ms=10**12),
        log_pb2.Command(nack=log_pb2.NackCommand(
            jobs=[queue_pb2.JobRef(job_id=1, attempt=1, receipt=1)], error="x" * 5000)),
    ]
    for command in cases:
        [result] = log.run(5, command)
        assert isinstance(result, Refused) and result.reason == Refusal.INVALID, result
    assert {k: j.as_tuple() for k, j in log.state.jobs.items()} == before
    assert log.state.paused == {}
    # all=True means it: every job of every queue
    assert log.run(6, cancel(all=True)) == [Affected(2, 0)]


def test_the_new_fields_and_pauses_survive_a_snapshot():
    log = Log()
    log.run(0, enqueue(queue_pb2.NewJob(queue="q", priority=2, dedup_key="order-7")))
    log.run(0, enqueue((3, b"b")))
    log.run(1, lease(2))
    log.run(2, cancel(job_ids=[2]))
    log.run(3, pause("q", duration_ms=10_000))
    copy = snapshot.load(snapshot.dump(log.state), members=log.state.members)
    assert copy.jobs == log.state.jobs
    assert copy.jobs[1].dedup_key == "order-7" and copy.jobs[2].cancel_requested
    assert copy.paused == {"q": 10_003 * MS}


def test_a_selector_by_dedup_prefix_picks_only_matching_jobs():
    log = Log()
    log.run(0, enqueue(*[queue_pb2.NewJob(queue="q", priority=3, dedup_key=k)
                         for k in ("mail-1", "mail-2", "sms-1", "")]))
    assert log.run(1, cancel(dedup_key_prefix="mail-")) == [Affected(2, 0)]
    assert [j.state for j in log.state.jobs.values()] == [
        JobState.CANCELLED, JobState.CANCELLED, JobState.READY, JobState.READY]


def test_pausing_more_queues_than_the_limit_is_refused(monkeypatch):
    monkeypatch.setattr(operators, "MAX_PAUSED_QUEUES", 2)
    log = Log()
    log.run(0, pause("a"), pause("b"))
    [refused] = log.run(1, pause("c"))
    assert isinstance(refused, Refused) and refused.reason == Refusal.INVALID
    assert sorted(log.state.paused) == ["a", "b"] and log.state.refusals
    assert log.run(2, pause("a", duration_ms=5)) == [Paused("a", True, 2 * MS + 5 * MS, True)]
