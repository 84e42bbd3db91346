"""Consumers against a real 3-node cluster: iteration over every node, run() with
acks, nacks, lease extension, a graceful stop on SIGINT, and bad input."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from support.cluster import wait_until

from dpq.client import (
    AsyncConsumer,
    AsyncProducer,
    Consumer,
    ExponentialBackoff,
    InvalidArgumentError,
    JobSpec,
    Producer,
)
from dpq.v1 import queue_pb2

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

EMPTY = {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


def enqueue(targets, queue, payloads, **fields):
    with Producer(targets) as producer:
        return producer.enqueue_many(JobSpec(p, queue=queue, **fields) for p in payloads)


def stop_later(consumer, seconds: float) -> threading.Timer:
    """A watchdog: a test that goes wrong stops its consumer, fails, and does not hang."""
    timer = threading.Timer(seconds, consumer.stop)
    timer.daemon = True
    timer.start()
    return timer


def test_iterating_gets_every_job_from_all_three_nodes(cluster, targets, queue, counts):
    ids = enqueue(targets, queue, [f"job-{i}" for i in range(30)], priority=2)
    got = {}
    with Consumer(targets[0], queue=queue, wait=1, max_jobs=5) as consumer:
        for job in consumer:
            assert job.id not in got, f"job {job.id} delivered twice"
            got[job.id] = job
            job.ack()
            if len(got) == len(ids):
                break
        assert sorted(consumer.nodes) == sorted(targets)  # learned from node 1's ClusterInfo
    assert sorted(got) == ids
    assert {job.address for job in got.values()} == set(targets)  # every node's own jobs
    job = got[ids[0]]
    assert (job.payload, job.priority, job.queue, job.attempt) == (b"job-0", 2, queue, 1)
    assert job.created_at <= datetime.now(UTC) < job.lease_expires_at
    assert job.settled
    wait_until(lambda: counts(queue) == EMPTY, 5, "every job acked")


def test_async_iteration_with_a_nack_brings_the_job_back_as_the_next_attempt(targets, queue,
                                                                           counts):
    async def main():
        async with AsyncProducer(targets) as producer:
            job_id = await producer.enqueue("again", queue=queue)
        attempts = []
        async with AsyncConsumer(targets, queue=queue, wait=1) as consumer:
            async for job in consumer:
                assert job.id == job_id
                attempts.append(job.attempt)
                if job.attempt == 1:
                    await job.nack(delay=0.2)
                else:
                    await job.ack()
                    break
            await job.nack()  # already acked: settling twice does nothing
            assert job.settled
        return attempts

    assert asyncio.run(main()) == [1, 2]
    wait_until(lambda: counts(queue) == EMPTY, 5, "the job acked")


def test_the_lease_receipt_rides_with_the_job_and_nobody_else_can_ack_it(cluster, targets, queue,
                                                                         counts):
    [job_id] = enqueue(targets, queue, ["mine"])
    with Consumer(targets, queue=queue, wait=1) as consumer:
        job = consumer.receive(timeout=20)
        assert job is not None and job.id == job_id
        # a stranger who knows the id and the attempt, not the receipt
        guess = queue_pb2.JobRef(job_id=job.id, attempt=job.attempt)
        [result] = cluster.stub(1).Ack(queue_pb2.AckRequest(jobs=[guess]), timeout=10).results
        assert (result.ok, result.error) == (False, "lease_lost")
        assert counts(queue)["leased"] == 1
        job.ack()  # the client quotes the receipt for the user
    wait_until(lambda: counts(queue) == EMPTY, 5, "the job acked")


def test_receive_times_out_with_none_on_an_empty_queue(targets, queue):
    with Consumer(targets, queue=queue, wait=0.2) as consumer:
        started = time.monotonic()
        assert consumer.receive(timeout=0.5) is None
        assert 0.4 < time.monotonic() - started < 3


def test_run_acks_on_return_and_nacks_with_backoff_on_exception(targets, queue, counts):
    payloads = [f"{'fail' if i % 2 else 'pass'}-{i}" for i in range(6)]
    enqueue(targets, queue, payloads)
    seen: list[tuple[str, int]] = []
    done = set()
    with Consumer(targets, queue=queue, wait=1,
                  nack_backoff=ExponentialBackoff(base=0.2, jitter=0)) as consumer:
        def handler(job):
            seen.append((job.text, job.attempt))
            if job.text.startswith("fail") and job.attempt == 1:
                raise RuntimeError("first try fails")
            done.add(job.text)
            if len(done) == len(payloads):
                consumer.stop()

        watchdog = stop_later(consumer, 30)
        summary = consumer.run(handler, concurrency=3)
        watchdog.cancel()
    assert done == set(payloads)
    assert (summary.handled, summary.acked, summary.failed, summary.refused) == (9, 6, 3, 0)
    for p in payloads:
        expected = [1, 2] if p.startswith("fail") else [1]
        assert sorted(a for t, a in seen if t == p) == expected, p
    wait_until(lambda: counts(queue) == EMPTY, 5, "every job acked")


def test_run_extends_the_lease_of_a_handler_that_outlives_it(targets, queue, counts):
    enqueue(targets, queue, ["slow"])
    deliveries = []
    with Consumer(targets, queue=queue, wait=1, lease=1.0) as consumer:
        def handler(job):
            deliveries.append(job.attempt)
            first = job.lease_expires_at
            # Hold the job a whole lease past the end of its first one (two leases
            # long), on leases the keeper extended: a poll, not a fixed sleep.
            wait_until(lambda: datetime.now(UTC) > first + timedelta(seconds=1.0)
                       and job.lease_expires_at > datetime.now(UTC), 20,
                       "the lease extended past two lease lengths")
            consumer.stop()

        watchdog = stop_later(consumer, 30)
        summary = consumer.run(handler, concurrency=2)
        watchdog.cancel()
    assert deliveries == [1]  # never handed out again meanwhile
    assert (summary.acked, summary.refused) == (1, 0)
    wait_until(lambda: counts(queue) == EMPTY, 5, "the slow job acked")


def test_sigint_stops_run_after_the_job_in_hand_and_gives_the_rest_back(targets, queue,
                                                                        counts):
    enqueue(targets, queue, [f"j{i}" for i in range(8)])
    before = signal.getsignal(signal.SIGINT)
    finished = []
    with Consumer(targets, queue=queue, wait=1) as consumer:
        stopping = threading.Event()
        stop = consumer.stop

        def stop_and_tell(*, now: bool = False) -> None:  # what the SIGINT handler calls
            stop(now=now)
            stopping.set()

        consumer.stop = stop_and_tell

        def handler(job):
            if not finished:
                signal.raise_signal(signal.SIGINT)
                # still running when the stop is asked for (no race against a timer)
                assert stopping.wait(10), "SIGINT did not stop the consumer"
            finished.append(job.id)

        watchdog = stop_later(consumer, 30)
        summary = consumer.run(handler, concurrency=1)
        watchdog.cancel()
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    assert len(finished) == 1 and (summary.handled, summary.acked) == (1, 1)
    wait_until(lambda: counts(queue) == {**EMPTY, "ready": 7}, 5,
               "the 7 jobs not handled ready again")


def test_a_handler_past_the_grace_deadline_is_cancelled_and_its_job_given_back(targets, queue,
                                                                               counts):
    [job_id] = enqueue(targets, queue, ["stuck"])

    async def main():
        async with AsyncConsumer(targets, queue=queue, wait=1) as consumer:
            started = asyncio.Event()

            async def handler(job):
                started.set()
                await asyncio.sleep(60)

            async def stop_when_started():
                await started.wait()
                consumer.stop()

            stopper = asyncio.create_task(stop_when_started())
            t0 = time.monotonic()
            summary = await asyncio.wait_for(consumer.run(handler, grace=0.3), 20)
            await stopper
            return summary, time.monotonic() - t0

    summary, took = asyncio.run(main())
    assert (summary.handled, summary.given_back, summary.acked) == (1, 1, 0)
    assert took < 10
    with Consumer(targets, queue=queue, wait=1) as consumer:
        job = consumer.receive(timeout=10)
        assert job is not None and (job.id, job.attempt) == (job_id, 2)
        job.ack()


def test_a_bad_queue_name_surfaces_as_invalid_argument(targets):
    with (Consumer(targets, queue="no spaces here", wait=1) as consumer,
          pytest.raises(InvalidArgumentError) as caught):
        next(iter(consumer))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "queue: 'no spaces here' has characters outside" in caught.value.details

    async def main():
        async with AsyncConsumer(targets, queue="", wait=120) as consumer:
            await consumer.run(lambda job: asyncio.sleep(0))

    with pytest.raises(InvalidArgumentError, match="wait_ms: 120000 ms is over the limit"):
        asyncio.run(main())
