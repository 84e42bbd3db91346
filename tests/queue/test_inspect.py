"""What an operator reads from a replica: GetJob, ListJobs (order, filters, pages) and
ExplainJob (what is ahead, what holds a job, when it should start)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.commands import MS, Log, cancel, enqueue, expire, lease, pause

from dpq.queue import inspect
from dpq.queue.validate import InvalidArgument
from dpq.v1 import queue_pb2

STEP = 5_000 * MS  # the default aging step: 5 s per priority level


def _page(log, now_ms, step=STEP, **fields):
    limit = fields.pop("limit", 100)
    request = queue_pb2.ListJobsRequest(**fields)
    return inspect.list_jobs(log.state, request, limit, now_ms * MS, step)


def test_get_job_says_everything_and_remembers_an_ack():
    log = Log()
    log.run(0, enqueue(queue_pb2.NewJob(queue="q", priority=2, payload=b"abc", dedup_key="k")))
    log.run(1, lease(1, consumer="worker-7"))
    info = inspect.job_info(log.state, 1, 2 * MS, STEP)
    assert (info.queue, info.priority, info.payload, info.payload_bytes, info.state,
            info.attempt, info.owner_node, info.consumer_id, info.dedup_key) == (
        "q", 2, b"abc", 3, queue_pb2.LEASED, 1, 1, "worker-7", "k")
    assert info.aged_key_us == 0 + 1 * STEP and info.lease_expires_at_us == 1001 * MS
    assert inspect.job_info(log.state, 1, 2 * MS, STEP, with_payload=False).payload == b""
    assert inspect.job_info(log.state, 99, 2 * MS, STEP) is None


def test_ready_jobs_are_listed_in_delivery_order_then_the_others_by_id():
    log = Log()
    log.run(0, enqueue((5, b"old-low")))  # 1: aged key 0 + 4 steps
    log.run(6_000, enqueue((4, b"newer-mid")))  # 2: 6 s + 3 steps = 21 s > 20 s
    log.run(7_000, enqueue((1, b"urgent"), (3, b"x")))  # 3: 7 s; 4: 17 s
    log.run(7_001, lease(4))
    ids = [j.job_id for j in _page(log, 7_002).jobs]
    assert ids == [3, 1, 2, 4]  # by aged key 7, 20, 21 s; leased 4 after the ready ones
    strict = [j.job_id for j in _page(log, 7_002, step=0).jobs]
    assert strict == [3, 2, 1, 4]  # aging off: by priority
    assert [j.job_id for j in _page(log, 7_002, state=queue_pb2.LEASED).jobs] == [4]
    assert [j.job_id for j in _page(log, 7_002, priority=5).jobs] == [1]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.integers(0, 50)), min_size=1, max_size=40),
       st.integers(1, 7), st.integers(0, 12))
def test_pages_list_every_job_once_and_in_order(jobs, page_size, leased):
    log = Log()
    for priority, at_ms in sorted(jobs, key=lambda j: j[1]):
        log.run(at_ms, enqueue((priority, b"j")))
    if leased:
        log.run(60, lease(*range(1, min(leased, len(jobs)) + 1)))
    whole = [j.job_id for j in _page(log, 61, limit=1000).jobs]
    assert sorted(whole) == list(range(1, len(jobs) + 1))
    paged, token = [], ""
    for _ in range(len(jobs) + 1):
        page = _page(log, 61, limit=page_size, page_token=token)
        paged += [j.job_id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert paged == whole


def test_a_token_not_handed_out_is_refused_with_the_field_named():
    with pytest.raises(InvalidArgument, match="page_token"):
        _page(Log(), 0, page_token="not-a-token")


def test_explain_counts_what_is_ahead_and_says_what_holds_it():
    log = Log()
    log.run(0, enqueue(*[(3, b"a")] * 4, owners=[1, 1, 2, 2]))
    log.run(1, enqueue((3, b"last"), owners=[1]))  # 5: behind all four
    out = inspect.explain(log.state, 5, 2 * MS, STEP, node_id=1, waiting_consumers=0)
    assert (out.ahead_on_node, out.ahead_in_cluster) == (2, 4)
    assert list(out.holds) == [queue_pb2.HOLD_PRIORITY_AHEAD, queue_pb2.HOLD_NO_CONSUMERS]
    assert out.consumers_known and out.estimated_start_us == 0  # nothing drains yet
    assert out.as_of_slot == 2 and out.answered_by == 1


def test_explain_estimates_the_start_from_the_drain_rate():
    log = Log()
    log.run(0, enqueue(*[(3, b"a")] * 12))
    log.run(1_000, lease(*range(1, 7)))  # 6 jobs leased: the queue drains
    out = inspect.explain(log.state, 12, 1_000 * MS, STEP, node_id=1, waiting_consumers=None)
    assert out.ahead_in_cluster == 5 and not out.consumers_known
    rate = out.drain_rate_per_s
    assert 0 < rate < 1  # six jobs over a one-minute window
    assert out.estimated_start_us == 1_000 * MS + int(5 / rate * 1e6)


def test_explain_of_a_paused_delayed_dead_or_cancelled_job():
    log = Log()
    log.run(0, enqueue(queue_pb2.NewJob(queue="q", priority=3, delay_ms=10_000), (3, b"b"),
                       (3, b"c")))
    log.run(1, pause("q"))
    out = inspect.explain(log.state, 1, 2 * MS, STEP, node_id=1, waiting_consumers=1)
    # 2 and 3 were ready at once: by aged key they go before the delayed 1
    assert list(out.holds) == [queue_pb2.HOLD_DELAYED, queue_pb2.HOLD_PAUSED,
                               queue_pb2.HOLD_PRIORITY_AHEAD]
    assert out.ahead_on_node == 2 and out.estimated_start_us == 0
    log.run(2, cancel(job_ids=[2]))
    assert list(inspect.explain(log.state, 2, 3 * MS, STEP, node_id=1,
                                waiting_consumers=1).holds) == [queue_pb2.HOLD_CANCELLED]
    log.state.paused.clear()
    log.run(3, lease(3, lease_ms=1))
    log.run(10, expire((3, 1), max_attempts=1))
    dead = inspect.explain(log.state, 3, 11 * MS, STEP, node_id=1, waiting_consumers=1)
    assert list(dead.holds) == [queue_pb2.HOLD_DEAD] and "lease expired" in dead.reasons[0]
