"""The admin client against a real 3-node cluster (issue 14): reading jobs, the bulk
changes, pausing and purging queues, explanations, and the error a consumer's nack
leaves behind."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from support.cluster import wait_until

from dpq.client import (
    Admin,
    AsyncAdmin,
    Consumer,
    Hold,
    InvalidArgumentError,
    JobNotFoundError,
    JobSpec,
    JobState,
    Producer,
    Selector,
    UnknownJobError,
)
from dpq.client.job import MAX_ERROR_BYTES
from dpq.v1 import queue_pb2

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

MAX_ATTEMPTS = 5  # the cluster's --max-attempts (tests/client/conftest.py)


def enqueue(targets, queue, payloads, **fields):
    with Producer(targets) as producer:
        return producer.enqueue_many(JobSpec(p, queue=queue, **fields) for p in payloads)


@pytest.fixture
def admin(targets):
    with Admin(targets) as admin:
        yield admin


def state_of(admin, job_id):
    return admin.get_job(job_id, payload=False).state


def test_get_and_list_show_the_jobs_as_enqueued(admin, targets, queue):
    urgent = enqueue(targets, queue, ["u1", "u2"], priority=1)
    rest = enqueue(targets, queue, ["r1", "r2", "r3"], priority=4)
    [keyed] = enqueue(targets, queue, ["k"], priority=4, dedup_key="order-17")
    before = datetime.now(UTC)

    job = admin.get_job(urgent[0])
    assert (job.job_id, job.queue, job.priority, job.state, job.payload) == (
        urgent[0], queue, 1, JobState.READY, b"u1")
    assert job.payload_bytes == 2 and job.owner_node in (1, 2, 3)
    assert job.created_at is not None and job.created_at <= before + timedelta(seconds=5)
    assert job.last_error == "" and not job.cancel_requested
    lean = admin.get_job(urgent[0], payload=False)
    assert lean.payload is None and lean.payload_bytes == 2
    assert admin.get_job(keyed).dedup_key == "order-17"

    page = admin.list_jobs(queue=queue)
    assert page.next_page_token == ""
    ids = [j.job_id for j in page.jobs]
    assert sorted(ids) == sorted(urgent + rest + [keyed])
    assert set(ids[:2]) == set(urgent)  # ready jobs first, in delivery order: priority 1 first
    assert [j.job_id for j in admin.list_jobs(queue=queue, priority=1).jobs] == \
        [j for j in ids if j in urgent]
    assert admin.list_jobs(queue=queue, state="dead").jobs == ()

    paged = list(admin.iter_jobs(queue=queue, page_size=2))  # three pages
    assert [j.job_id for j in paged] == ids
    first = admin.list_jobs(queue=queue, limit=2)
    assert len(first.jobs) == 2 and first.next_page_token


def test_asking_for_what_is_not_there_or_not_allowed_raises_what_it_says(admin, targets, queue):
    with pytest.raises(UnknownJobError) as missing:
        admin.get_job(10**15)
    assert isinstance(missing.value, JobNotFoundError) and missing.value.job_id == 10**15
    with pytest.raises(JobNotFoundError):
        admin.explain_job(10**15)
    with pytest.raises(InvalidArgumentError):
        admin.cancel_jobs()  # nothing selected, and not all=True
    [job_id] = enqueue(targets, queue, ["x"])
    with pytest.raises(InvalidArgumentError, match="priority"):
        admin.set_priority(9, job_ids=[job_id])
    with pytest.raises(InvalidArgumentError):
        admin.list_jobs(queue=queue, limit=100_000)
    assert state_of(admin, job_id) is JobState.READY  # nothing changed


def test_cancel_retry_and_priority_change_exactly_the_selected_jobs(admin, targets, queue):
    orders = [enqueue(targets, queue, [f"order {i}"], priority=5, dedup_key=f"order-{i}")[0]
              for i in range(3)]
    [other] = enqueue(targets, queue, ["other"], priority=5, dedup_key="user-1")

    moved = admin.set_priority(2, queue=queue, dedup_key_prefix="order-")
    assert moved.count == 3 and moved.slot > 0
    assert [admin.get_job(i).priority for i in orders] == [2, 2, 2]
    assert admin.get_job(other).priority == 5

    cancelled = admin.cancel_jobs(Selector(job_ids=(orders[0], orders[1])))
    assert (cancelled.count, cancelled.deferred) == (2, 0)
    assert [state_of(admin, i) for i in orders] == [JobState.CANCELLED, JobState.CANCELLED,
                                                    JobState.READY]
    assert state_of(admin, orders[0]) == "cancelled"
    assert admin.get_job(orders[0]).finished_at is not None
    listed = {j.job_id for j in admin.list_jobs(queue=queue, state=JobState.CANCELLED).jobs}
    assert listed == {orders[0], orders[1]}

    again = admin.retry_jobs(job_ids=[orders[0]])
    assert again.count == 1 and again.slot > cancelled.slot
    assert state_of(admin, orders[0]) is JobState.READY
    assert state_of(admin, orders[1]) is JobState.CANCELLED


def test_a_leased_job_is_cancelled_when_its_lease_ends_unacked(admin, targets, queue):
    [job_id] = enqueue(targets, queue, ["held"])
    with Consumer(targets, queue=queue, wait=1) as consumer:
        job = consumer.receive(timeout=30)
        assert job is not None and job.id == job_id
        assert state_of(admin, job_id) is JobState.LEASED
        done = admin.cancel_jobs(job_ids=[job_id])
        assert (done.count, done.deferred) == (0, 1)
        info = admin.get_job(job_id)
        assert info.cancel_requested and info.state is JobState.LEASED and info.consumer_id
        job.nack()
    wait_until(lambda: state_of(admin, job_id) is JobState.CANCELLED, 15,
               "the job cancelled once given back")


def test_failing_handlers_leave_their_exception_text_then_dead_jobs_are_retried(admin, targets,
                                                                                 queue):
    ids = enqueue(targets, queue, ["row-1", "row-2"])
    last_attempt: set[str] = set()
    with Consumer(targets, queue=queue, wait=1, nack_backoff=lambda attempt: 0) as consumer:
        def handler(job):
            if job.attempt >= MAX_ATTEMPTS:
                last_attempt.add(job.text)
                if len(last_attempt) == len(ids):
                    consumer.stop()
            raise ValueError(f"bad {job.text}")

        summary = consumer.run(handler, concurrency=2)
    assert summary.failed == len(ids) * MAX_ATTEMPTS and summary.refused == 0
    wait_until(lambda: all(state_of(admin, i) is JobState.DEAD for i in ids), 20,
               "both jobs dead")
    job = admin.get_job(ids[0])
    assert job.last_error == "ValueError: bad row-1" and job.attempt == MAX_ATTEMPTS
    assert admin.get_job(ids[1]).last_error == "ValueError: bad row-2"
    dead = admin.list_jobs(queue=queue, state="dead").jobs
    assert {j.job_id for j in dead} == set(ids)
    assert Hold.DEAD in admin.explain_job(ids[0]).holds

    retried = admin.retry_jobs(queue=queue, state="dead")
    assert retried.count == 2
    assert [state_of(admin, i) for i in ids] == [JobState.READY, JobState.READY]
    with Consumer(targets, queue=queue, wait=1) as consumer:
        got = [consumer.receive(timeout=30) for _ in ids]
        assert sorted(j.id for j in got if j is not None) == ids
        for j in got:
            j.ack()


def test_a_long_nack_error_is_kept_cut_at_a_character(admin, targets, queue):
    [job_id] = enqueue(targets, queue, ["long"])
    with Consumer(targets, queue=queue, wait=1) as consumer:
        job = consumer.receive(timeout=30)
        assert job is not None
        job.nack(60, error="é" * 2000)  # 4,000 bytes of UTF-8
    kept = admin.get_job(job_id).last_error
    assert kept.endswith("…") and set(kept[:-1]) == {"é"}
    assert MAX_ERROR_BYTES - 4 <= len(kept.encode()) <= MAX_ERROR_BYTES
    assert state_of(admin, job_id) is JobState.DELAYED


def test_a_paused_queue_delivers_nothing_until_resumed(admin, targets, queue, cluster):
    paused = admin.pause_queue(queue)
    assert (paused.queue, paused.paused, paused.paused_until) == (queue, True, None)
    [job_id] = enqueue(targets, queue, ["wait"])
    stats = cluster.stub(1).Stats(queue_pb2.StatsRequest(queue=queue), timeout=5).queues
    assert stats and stats[0].paused
    why = admin.explain_job(job_id)
    assert Hold.PAUSED in why.holds and why.reasons and why.estimated_start is None
    with Consumer(targets, queue=queue, wait=0.5) as consumer:
        assert consumer.receive(timeout=2) is None
        resumed = admin.resume_queue(queue)
        assert (resumed.paused, resumed.was_paused) == (False, True)
        job = consumer.receive(timeout=30)
        assert job is not None and job.id == job_id
        job.ack()
    assert admin.resume_queue(queue).was_paused is False

    timed = admin.pause_queue(queue, timedelta(minutes=10))
    assert timed.paused and timed.paused_until is not None
    left = (timed.paused_until - datetime.now(UTC)).total_seconds()
    assert 500 < left <= 600
    admin.resume_queue(queue)


def test_purge_removes_every_job_of_the_queue_and_no_other(admin, targets, queue):
    enqueue(targets, queue, ["a", "b", "c"], priority=2)
    enqueue(targets, queue, ["later"], delay=600)
    [elsewhere] = enqueue(targets, queue + "-other", ["keep"])
    purged = admin.purge_queue(queue)
    assert purged.count == 4
    wait_until(lambda: admin.list_jobs(queue=queue).jobs == (), 10, "the queue empty")
    assert state_of(admin, elsewhere) is JobState.READY


def test_explain_counts_the_jobs_ahead_and_names_the_hold(admin, targets, queue):
    enqueue(targets, queue, ["u1", "u2", "u3"], priority=1)
    [late] = enqueue(targets, queue, ["low"], priority=5)
    why = admin.explain_job(late)
    assert why.job.job_id == late and why.job.state is JobState.READY
    assert why.ahead_in_cluster == 3 and why.ahead_on_node <= 3
    # more urgent jobs hold it back where it is served: on its owner node
    assert (Hold.PRIORITY_AHEAD in why.holds) == (why.ahead_on_node > 0)
    # nobody consumes the queue (known when the owner node answered)
    assert (Hold.NO_CONSUMERS in why.holds) == (why.waiting_consumers == 0)
    assert why.waiting_consumers in (0, None)
    assert len(why.reasons) >= 1 and all(why.reasons)
    assert why.answered_by in (1, 2, 3) and why.as_of_slot > 0


def test_the_async_admin_does_the_same(targets, queue):
    async def main():
        async with AsyncAdmin(targets) as admin:
            page = await admin.list_jobs(queue=queue)
            seen = [j.job_id async for j in admin.iter_jobs(queue=queue, page_size=1)]
            gone = await admin.cancel_jobs(queue=queue)
            with pytest.raises(UnknownJobError):
                await admin.get_job(10**15)
            return [j.job_id for j in page.jobs], seen, gone.count

    job_ids = enqueue(targets, queue, ["a", "b"])
    ids, seen, cancelled = asyncio.run(main())
    assert sorted(ids) == job_ids and seen == ids and cancelled == 2
