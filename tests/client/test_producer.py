"""Producers against a real 3-node cluster: round trips, batching, retries, bad input.

The ambiguous failure (the cluster took the jobs, the answer never came) is
made by a real TCP proxy between the client and a node that swallows the
answer and cuts the connection: no gRPC or PostgreSQL is mocked.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from support.cluster import free_ports, wait_until

from dpq.client import (
    AsyncConsumer,
    AsyncProducer,
    Consumer,
    InvalidArgumentError,
    JobSpec,
    Producer,
    RetryPolicy,
    UnavailableError,
)

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

FAST_RETRY = RetryPolicy(max_attempts=6, deadline=20, initial_backoff=0.05, max_backoff=0.5)


def drain(targets, queue, n, timeout=20.0):
    """Consume and ack ``n`` jobs of ``queue``; {payload: job}."""

    async def main():
        got = {}
        deadline = time.monotonic() + timeout
        async with AsyncConsumer(targets, queue=queue, wait=1, max_jobs=100,
                                 prefetch=n) as consumer:
            while len(got) < n and time.monotonic() < deadline:
                job = await consumer.receive(timeout=max(0.0, deadline - time.monotonic()))
                if job is not None:
                    got[job.payload] = job
            await asyncio.gather(*(job.ack() for job in got.values()))
        return got

    got = asyncio.run(main())
    assert len(got) == n, f"consumed {len(got)} of {n} jobs of {queue}"
    return got


# ---------------------------------------------------------------- round trips


def test_enqueue_returns_an_id_and_the_job_arrives_as_sent(targets, queue, counts):
    with Producer(targets) as producer:
        text_id = producer.enqueue("hello ✓", priority=1, queue=queue)
        bytes_id = producer.enqueue(b"\x00\xffraw", priority=5, queue=queue)
        before = datetime.now(UTC)
        later_id = producer.enqueue("later", queue=queue, delay=timedelta(milliseconds=700))
        assert producer.stats.requests == 3 and producer.stats.retries == 0
    assert text_id < bytes_id < later_id
    assert counts(queue)["delayed"] == 1

    got = drain(targets, queue, 3)
    hello, raw, later = got["hello ✓".encode()], got[b"\x00\xffraw"], got[b"later"]
    assert (hello.id, hello.priority, hello.queue, hello.attempt) == (text_id, 1, queue, 1)
    assert hello.text == "hello ✓"
    assert (raw.id, raw.priority) == (bytes_id, 5)
    assert later.id == later_id and later.priority == 3
    assert later.created_at >= before - timedelta(seconds=1)
    assert hello.lease_expires_at > hello.created_at
    wait_until(lambda: counts(queue) == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}, 5,
               "every job acked")


def test_enqueue_many_takes_payloads_mappings_and_specs_and_returns_ids_in_order(targets, queue):
    items = [b"p0", "p1", {"payload": "p2", "priority": 1, "queue": queue},
             JobSpec("p3", priority=2, queue=queue, delay=0.2)]
    with Producer(targets) as producer:
        ids = producer.enqueue_many(items[2:])
        default_ids = producer.enqueue_many(JobSpec(p, queue=queue) for p in ("p4", "p5"))
        assert producer.enqueue_many([]) == []
    assert len(ids) == 2 and ids == sorted(ids) and default_ids == sorted(default_ids)
    got = drain(targets, queue, 4)
    assert [got[b"p2"].id, got[b"p3"].id] == ids
    assert (got[b"p2"].priority, got[b"p3"].priority, got[b"p4"].priority) == (1, 2, 3)

    with pytest.raises(TypeError, match="unknown job field"), Producer(targets) as producer:
        producer.enqueue_many([{"payload": "x", "prio": 1}])


def test_enqueue_many_splits_a_large_batch_into_several_requests(targets, queue, counts):
    with Producer(targets) as producer:
        ids = producer.enqueue_many(JobSpec(b"%d" % i, queue=queue) for i in range(2500))
        assert producer.stats.requests == 3  # at most 1000 jobs per request
    assert len(set(ids)) == 2500 and ids == sorted(ids)
    wait_until(lambda: counts(queue)["ready"] == 2500, 5, "2500 ready jobs")


# ------------------------------------------------------------------ batching


def test_batching_mode_sends_jobs_from_many_threads_in_few_stream_messages(targets, queue):
    with Producer(targets, batching=True) as producer:
        def submit_all(k):
            return [producer.submit(f"{k}-{i}", queue=queue, priority=1 + i % 5)
                    for i in range(250)]

        with ThreadPoolExecutor(4) as pool:
            futures = [f for fs in pool.map(submit_all, range(4)) for f in fs]
        ids = [f.result(timeout=30) for f in futures]
        stats = producer.stats
    assert len(set(ids)) == 1000
    assert stats.jobs == 1000 and stats.requests <= 100, stats  # rode together
    got = drain(targets, queue, 1000)
    assert {job.id for job in got.values()} == set(ids)
    assert got[b"2-7"].priority == 3


def test_async_batching_mode_fails_only_the_bad_job_of_a_batch(targets, queue):
    async def main():
        async with AsyncProducer(targets, batching=True) as producer:
            jobs = [producer.enqueue(f"ok-{i}", queue=queue) for i in range(200)]
            jobs.insert(100, producer.enqueue("bad", priority=9, queue=queue))
            results = await asyncio.gather(*jobs, return_exceptions=True)
            lone = await producer.enqueue("lone", queue=queue)
            return results, lone, producer.stats

    results, lone, stats = asyncio.run(main())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], InvalidArgumentError), errors
    assert errors[0] is results[100]
    assert "priority: 9 is outside 1..5" in errors[0].details
    ids = [r for r in results if isinstance(r, int)]
    assert len(set(ids)) == 200 and lone not in ids
    assert stats.requests < 60, stats  # the bad job was found by halving
    got = drain(targets, queue, 201)
    assert b"bad" not in got


# ------------------------------------------------------------ errors, retries


def test_invalid_argument_raises_the_library_error_with_the_server_message_at_once(targets, queue):
    with Producer(targets, retry=FAST_RETRY) as producer:
        with pytest.raises(InvalidArgumentError) as caught:
            producer.enqueue("x", priority=9, queue=queue)
        assert producer.stats.requests == 1 and producer.stats.retries == 0  # never retried
        with pytest.raises(InvalidArgumentError, match="characters outside"):
            producer.enqueue("x", queue="no spaces")
        with pytest.raises(TypeError, match="payload must be bytes or str"):
            producer.enqueue(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="negative"):
            producer.enqueue("x", delay=-1)
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details == "jobs[0].priority: 9 is outside 1..5 (1 is the most urgent)"
    assert error.method == "Enqueue" and error.address in targets


def test_a_dead_endpoint_is_skipped_for_the_next_one(targets, queue, counts):
    [dead] = free_ports(1)
    with Producer([f"127.0.0.1:{dead}", targets[1]], retry=FAST_RETRY) as producer:
        job_id = producer.enqueue("via node 2", queue=queue)
        assert producer.stats.retries >= 1
    assert job_id > 0
    with (Producer([f"127.0.0.1:{dead}"], retry=FAST_RETRY) as producer,
          pytest.raises(UnavailableError, match="gave up after 6 attempts")):
        producer.enqueue("nowhere", queue=queue)


class AnswerSwallowingProxy:
    """A TCP proxy to one node that loses the answer to the request carrying ``marker``.

    It forwards that request, drops every byte the node sends back on that
    connection, and cuts it ``hold`` seconds later: the node enqueued the job,
    the client saw only a broken connection.
    """

    def __init__(self, target: str, marker: bytes, hold: float = 0.5) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._marker = marker
        self._hold = hold
        self.fired = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            self._sockets += [client, upstream]
            swallow = threading.Event()
            threading.Thread(target=self._up, args=(client, upstream, swallow), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, swallow),
                             daemon=True).start()

    def _up(self, client, upstream, swallow) -> None:
        tail = b""
        while data := _recv(client):
            if not self.fired.is_set() and self._marker in tail + data:
                self.fired.set()
                swallow.set()
                threading.Timer(self._hold, _cut, (client, upstream)).start()
            tail = data[-len(self._marker):]
            upstream.sendall(data)
        _cut(client, upstream)

    def _down(self, upstream, client, swallow) -> None:
        while data := _recv(upstream):
            if not swallow.is_set():
                client.sendall(data)
        _cut(client, upstream)

    def close(self) -> None:
        for s in self._sockets:
            _cut(s)


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except OSError:
        return b""


def _cut(*sockets: socket.socket) -> None:
    for s in sockets:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "plain"])
def test_a_retry_after_a_lost_answer_enqueues_once_only_when_idempotent(
        cluster, targets, queue, counts, idempotent):
    marker = f"marker-{queue}".encode()
    proxy = AnswerSwallowingProxy(targets[0], marker)
    try:
        with Producer([proxy.address, targets[1]], idempotent=idempotent,
                      retry=FAST_RETRY) as producer:
            job_id = producer.enqueue(marker, queue=queue)
            assert proxy.fired.is_set() and producer.stats.retries >= 1
    finally:
        proxy.close()
    # node 2 answered the retry, so it has applied both attempts' slots
    expected = 1 if idempotent else 2  # the documented duplicate without idempotent=True
    assert counts(queue, node=2)["ready"] == expected
    got = {}
    with Consumer(targets, queue=queue, wait=1) as consumer:
        for _ in range(expected):
            job = consumer.receive(timeout=10)
            assert job is not None
            got[job.id] = job.payload
            job.ack()
    assert set(got.values()) == {marker} and job_id in got
