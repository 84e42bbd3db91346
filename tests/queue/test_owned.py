"""A node's view of the jobs it owns, kept in step with the state machine."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.commands import (
    MEMBERS,
    MS,
    Log,
    commands,
    enqueue,
    expire,
    extend,
    grants,
    lease,
    nack,
    reassign,
    receipt,
)

from dpq.queue.owned import OwnedJobs
from dpq.queue.state import JobState, QueueState


def make(node=1, aging_step_ms=0):
    state = QueueState(members=MEMBERS)
    owned = OwnedJobs(node, state, aging_step_ms * MS)
    state.observer = owned
    return Log(state), owned


def test_only_owned_ready_jobs_are_served_in_priority_order():
    log, owned = make(node=1)
    log.run(0, enqueue((3, b"a"), (1, b"b"), (2, b"c"), (1, b"d"), owners=[1, 1, 1, 2]))
    assert owned.take_woken() == {"q"} and owned.take_woken() == set()
    assert owned.reserve("q", 10, 0) == [2, 3, 1]  # job 4 is node 2's
    assert owned.reserve("q", 10, 0) == []


def test_reserved_jobs_return_when_the_lease_is_not_granted():
    log, owned = make(node=1)
    log.run(0, enqueue((1, b"a"), (1, b"b")))
    ids = owned.reserve("q", 2, 0)
    granted = grants(log.run(1, lease(ids[0], node=1)))
    assert [j.job_id for j in granted] == [1] and owned.reserved == {2}
    owned.release(ids)  # job 2's lease proposal was lost
    assert owned.reserved == set() and owned.reserve("q", 5, 0) == [2]


def test_delayed_and_nacked_jobs_wait_for_their_time():
    log, owned = make(node=1)
    log.run(0, enqueue((1, b"a")))
    [_] = grants(log.run(0, lease(*owned.reserve("q", 1, 0))))
    log.run(10, nack((1, 1), delay_ms=100))
    assert owned.reserve("q", 1, 50 * MS) == [] and owned.next_due_us("q") == 110 * MS
    assert owned.reserve("q", 1, 110 * MS) == [1]


def test_expired_leases_are_reported_until_the_expire_lands():
    log, owned = make(node=1)
    log.run(0, enqueue((1, b"a"), (1, b"b")))
    log.run(0, lease(*owned.reserve("q", 2, 0), lease_ms=100))
    log.run(50, extend((2, 1), lease_ms=500))
    assert owned.expired_leases(99 * MS, retry_after_us=1000 * MS) == []
    assert owned.expired_leases(100 * MS, retry_after_us=1000 * MS) == [(1, 1, receipt(1))]
    assert owned.expired_leases(200 * MS, retry_after_us=1000 * MS) == []
    # the Expire was lost: the lease is reported again after the retry delay
    assert sorted(owned.expired_leases(1100 * MS, retry_after_us=1000 * MS)) == [(1, 1, receipt(1)),
                                                                                 (2, 1, receipt(2))]
    log.run(1100, expire((1, 1), (2, 1)))
    assert owned.expired_leases(5000 * MS, retry_after_us=1000 * MS) == []
    assert owned.reserve("q", 5, 5000 * MS) == [1, 2]


def test_reassigned_jobs_move_between_nodes():
    log, one = make(node=1)
    two = OwnedJobs(2, log.state, 0)

    class Both:
        def job_changed(self, *args):
            one.job_changed(*args)
            two.job_changed(*args)

    log.state.observer = Both()
    log.run(0, enqueue((1, b"a"), (2, b"b")))
    log.run(1, reassign([1], [2]))
    assert one.reserve("q", 5, 0) == [2] and two.reserve("q", 5, 0) == [1]


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), commands), max_size=40))
def test_heaps_hold_exactly_the_owned_ready_jobs(steps):
    log, owned = make(node=1)
    now = 0
    for dt, command in steps:
        now += dt
        log.run(now, command)
        expected = {
            job.job_id for job in log.state.jobs.values()
            if job.owner == 1 and job.state == JobState.READY
        }
        held = {(q, job_id)
                for q, heap in owned.heaps.items() for job_id in expected if job_id in heap}
        assert {job_id for _, job_id in held} == expected
        assert all(log.state.jobs[j].queue == q for q, j in held)
        assert sum(len(h) for h in owned.heaps.values()) == len(expected)
    # rebuilding from the state gives the same heaps
    fresh = OwnedJobs(1, log.state, 0)
    fresh.rebuild()
    for q in set(owned.heaps) | set(fresh.heaps):
        a = owned.heaps.get(q)
        b = fresh.heaps.get(q)
        assert (len(a) if a else 0) == (len(b) if b else 0)


# ------------------------------------------------------------------ fair shares

def _tenant_jobs(key, n, priority=3):
    from dpq.v1 import queue_pb2
    return [queue_pb2.NewJob(queue="q", priority=priority, payload=b"x", fairness_key=key)
            for _ in range(n)]


def test_a_small_tenant_is_not_stuck_behind_a_big_ones_backlog():
    log, owned = make(node=1)
    log.run(0, enqueue(*_tenant_jobs("big", 1000)))
    log.run(1, enqueue(*_tenant_jobs("small", 10)))
    first = owned.reserve("q", 30, 2 * MS)
    small = [i for i in first if log.state.jobs[i].fairness_key == "small"]
    assert len(small) == 10  # every one of them among the first 30 (FIFO: after 1,000)


def test_weights_from_the_queue_settings_give_shares_and_follow_changes():
    from support.commands import queue_config
    log, owned = make(node=1)
    log.run(0, queue_config(fairness_weights={"a": 3}))
    log.run(0, enqueue(*_tenant_jobs("a", 400), *_tenant_jobs("b", 400)))
    keys = [log.state.jobs[i].fairness_key for i in owned.reserve("q", 200, MS)]
    assert (keys.count("a"), keys.count("b")) == (150, 50)
    log.run(2, queue_config(fairness_weights={"a": 0, "b": 3}))  # a back to 1, b to 3
    keys = [log.state.jobs[i].fairness_key for i in owned.reserve("q", 200, 3 * MS)]
    assert abs(keys.count("b") - 150) <= 1 and abs(keys.count("a") - 50) <= 1


def test_priority_comes_before_fairness():
    log, owned = make(node=1)
    log.run(0, enqueue(*_tenant_jobs("a", 5, priority=2), *_tenant_jobs("b", 5, priority=4)))
    got = owned.reserve("q", 10, MS)
    assert [log.state.jobs[i].priority for i in got] == [2] * 5 + [4] * 5
