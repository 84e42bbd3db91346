"""Producers: :class:`AsyncProducer` (asyncio) and :class:`Producer` (blocking).

``Producer`` runs an ``AsyncProducer`` on a private event loop thread (see
``dpq.client._loop``): one implementation, two faces.

Retries and duplicates
----------------------
A call that fails with ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED`` is retried, with
exponential backoff and jitter, on the next endpoint. Such a failure is
ambiguous: the cluster may have enqueued the jobs and only the answer was lost.
A retry after it can then enqueue a job **twice**, unless the job has a
``dedup_key`` (a key seen again within the cluster's dedup window returns the
first job's id). ``idempotent=True`` gives every job without a key a random
one, made once before the first attempt, so retries are safe; it costs the
cluster a dedup entry per job for the window (an hour by default).

Batching
--------
With ``batching=True``, single-job calls (:meth:`AsyncProducer.enqueue`,
:meth:`AsyncProducer.submit`) ride together in ``EnqueueStream`` messages:
a batch leaves as soon as the stream has room (at once when idle, so a lone
job is not held back), and under load the jobs that gather while earlier
batches are in flight leave together, up to ``batch_size``.
:meth:`AsyncProducer.enqueue_many` always sends its jobs as batches.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dpq.client._closing import AsyncClient, BlockingClient
from dpq.client._coalesce import Coalescer
from dpq.client._endpoints import (
    Channels,
    Endpoints,
    PathLike,
    Targets,
    parse_targets,
    security,
)
from dpq.client._loop import LoopThread
from dpq.client._retry import RetryCounter, RetryPolicy, with_retries
from dpq.client._stream import EnqueueStream
from dpq.client.errors import (
    ClientClosedError,
    DpqError,
    InvalidArgumentError,
    PartialEnqueueError,
)
from dpq.client.spec import (
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    Delay,
    JobLike,
    JobSpec,
    Payload,
    as_spec,
    to_new_job,
)
from dpq.v1 import queue_pb2

#: At most this many jobs / payload bytes per request (the server takes up to
#: 10,000 jobs; smaller requests pipeline better).
MAX_REQUEST_JOBS = 1000
MAX_REQUEST_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class ProducerStats:
    """Counters of a producer since it was made.

    ``requests`` counts Enqueue calls and EnqueueStream messages sent
    (retries included), ``jobs`` the job ids received, ``retries`` the
    attempts repeated after a failure.
    """

    requests: int
    jobs: int
    retries: int


def _chunks(jobs: Sequence[queue_pb2.NewJob]) -> list[list[queue_pb2.NewJob]]:
    out: list[list[queue_pb2.NewJob]] = []
    current: list[queue_pb2.NewJob] = []
    size = 0
    for job in jobs:
        full = len(current) >= MAX_REQUEST_JOBS or size + len(job.payload) > MAX_REQUEST_BYTES
        if current and full:
            out.append(current)
            current, size = [], 0
        current.append(job)
        size += len(job.payload)
    if current:
        out.append(current)
    return out


class AsyncProducer(AsyncClient):
    """Enqueues jobs from asyncio code.

    ``targets``: ``HOST:PORT`` of a gateway or of nodes (a list, or one string
    with commas); None reads ``$DPQ_ADDR``, else ``127.0.0.1:7100``.
    ``timeout``: seconds one attempt may take. ``retry``: the
    :class:`RetryPolicy`. ``idempotent`` and ``batching``: see the module
    docstring. ``tls_dir`` (a ``dpq certs init`` folder), or ``root_certificates``
    (the CA: PEM bytes or a file) and ``token``: connect with TLS and the bearer
    token; none of them: ``$DPQ_TLS_DIR`` if set, else plaintext. Use it as
    ``async with AsyncProducer(...) as producer:`` or call :meth:`close`.
    """

    def __init__(self, targets: Targets = None, *, batching: bool = False,
                 batch_size: int = 500, idempotent: bool = False, timeout: float = 20.0,
                 retry: RetryPolicy | None = None, tls_dir: PathLike | None = None,
                 root_certificates: bytes | PathLike | None = None,
                 token: str | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self._channels = Channels(security(tls_dir, root_certificates, token))
        self._endpoints = Endpoints(self._channels, parse_targets(targets))
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._idempotent = idempotent
        self._counter = RetryCounter()
        self._requests = 0
        self._jobs = 0
        self._closed = False
        self._stream: EnqueueStream | None = None
        self._batcher: Coalescer[queue_pb2.NewJob, int] | None = None
        if batching:
            self._stream = EnqueueStream(self._channels)
            self._batcher = Coalescer(self._send_streamed,
                                      max_items=min(batch_size, MAX_REQUEST_JOBS),
                                      max_inflight=2, max_bytes=MAX_REQUEST_BYTES,
                                      size=lambda job: len(job.payload))
        self._submitted: set[asyncio.Future[int]] = set()

    @property
    def stats(self) -> ProducerStats:
        """Counters since the producer was made."""
        return ProducerStats(self._requests, self._jobs, self._counter.retries)

    async def enqueue(self, payload: Payload, priority: int = DEFAULT_PRIORITY,
                      queue: str = DEFAULT_QUEUE, delay: Delay = None,
                      dedup_key: str | None = None, fairness_key: str | None = None) -> int:
        """Enqueue one job; its id once the cluster has it.

        ``payload`` is bytes, or str (sent as UTF-8); ``priority`` 1 is the
        most urgent, 5 the least; ``delay`` (seconds or a ``timedelta``) holds
        the job back that long; ``fairness_key`` names its tenant (within a
        priority, tenants take turns by weight). Raises :class:`~dpq.client.InvalidArgumentError`
        for input the server refuses, :class:`~dpq.client.UnavailableError`
        when no endpoint took it in time.
        """
        return await self.submit(payload, priority, queue, delay, dedup_key, fairness_key)

    def submit(self, payload: Payload, priority: int = DEFAULT_PRIORITY,
               queue: str = DEFAULT_QUEUE, delay: Delay = None,
               dedup_key: str | None = None,
               fairness_key: str | None = None) -> asyncio.Future[int]:
        """Start enqueueing one job without waiting: a future of its id.

        Must be called on the event loop. Bad argument types raise here, at
        once; everything else lands in the future.
        """
        self._check_open()
        job = to_new_job(JobSpec(payload, priority, queue, delay, dedup_key, fairness_key),
                         self._idempotent)
        if self._batcher is not None:
            future = self._batcher.submit(job)
        else:
            future = asyncio.ensure_future(self._send_one(job))
        self._submitted.add(future)
        future.add_done_callback(self._submitted.discard)
        return future

    async def enqueue_many(self, items: Iterable[JobLike]) -> list[int]:
        """Enqueue several jobs in as few requests as fit; their ids, in order.

        Each item is a :class:`JobSpec`, a payload, or a mapping with
        JobSpec's field names. Raises :class:`~dpq.client.PartialEnqueueError`
        (with the ids enqueued so far) if a later request fails after an
        earlier one succeeded.
        """
        self._check_open()
        jobs = [to_new_job(as_spec(item), self._idempotent) for item in items]
        ids: list[int] = []
        for chunk in _chunks(jobs):
            try:
                ids.extend(await self._send(chunk))
            except Exception as exc:
                if not ids:
                    raise
                raise PartialEnqueueError(ids, len(jobs), exc) from exc
        return ids

    async def flush(self) -> None:
        """Wait until every job submitted so far has its answer (or error)."""
        while self._submitted:
            await asyncio.gather(*list(self._submitted), return_exceptions=True)

    async def close(self) -> None:
        """Wait for submitted jobs, then close the connections."""
        if self._closed:
            return
        try:
            await self.flush()
        finally:
            self._closed = True
            if self._stream is not None:
                await self._stream.close()
            await self._channels.close()

    # ---------------------------------------------------------------- sending

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the producer is closed")

    async def _send(self, jobs: list[queue_pb2.NewJob]) -> list[int]:
        request = queue_pb2.EnqueueRequest(jobs=jobs)

        async def attempt(address: str) -> list[int]:
            self._requests += 1
            response = await self._endpoints.channels.stub(address).Enqueue(
                request, timeout=self._timeout)
            if len(response.job_ids) != len(jobs):
                raise DpqError(f"Enqueue: {len(response.job_ids)} ids for {len(jobs)} jobs")
            return list(response.job_ids)

        ids = await with_retries(self._endpoints, self._retry, "Enqueue", attempt, self._counter)
        self._jobs += len(ids)
        return ids

    async def _send_one(self, job: queue_pb2.NewJob) -> int:
        [job_id] = await self._send([job])
        return job_id

    async def _send_streamed(self, jobs: list[queue_pb2.NewJob]) -> list[int | BaseException]:
        assert self._stream is not None
        stream = self._stream
        request = queue_pb2.EnqueueRequest(jobs=jobs)

        async def attempt(address: str) -> list[int]:
            self._requests += 1
            return await stream.send(address, request, self._timeout)

        try:
            ids = await with_retries(self._endpoints, self._retry, "EnqueueStream", attempt,
                                     self._counter)
        except InvalidArgumentError:
            if len(jobs) == 1:
                raise
            # One bad job refuses its whole batch, and nothing of it was taken:
            # send the halves again (recursively) so only the bad ones fail.
            return await self._isolate(jobs)
        self._jobs += len(ids)
        return list(ids)

    async def _isolate(self, jobs: list[queue_pb2.NewJob]) -> list[int | BaseException]:
        try:
            return list(await self._send(jobs))
        except InvalidArgumentError as exc:
            if len(jobs) == 1:
                return [exc]
            mid = len(jobs) // 2
            left, right = await asyncio.gather(self._isolate(jobs[:mid]),
                                               self._isolate(jobs[mid:]))
            return left + right
        except Exception as exc:  # noqa: BLE001 - every job of this part fails with it
            return [exc] * len(jobs)


class Producer(BlockingClient):
    """Enqueues jobs from blocking code; the same arguments as :class:`AsyncProducer`.

    Thread-safe. Use it as ``with Producer(...) as producer:`` or call
    :meth:`close`.
    """

    def __init__(self, targets: Targets = None, *, batching: bool = False,
                 batch_size: int = 500, idempotent: bool = False, timeout: float = 20.0,
                 retry: RetryPolicy | None = None, tls_dir: PathLike | None = None,
                 root_certificates: bytes | PathLike | None = None,
                 token: str | None = None) -> None:
        self._loop = LoopThread("dpq-producer")

        async def make() -> AsyncProducer:
            return AsyncProducer(targets, batching=batching, batch_size=batch_size,
                                 idempotent=idempotent, timeout=timeout, retry=retry,
                                 tls_dir=tls_dir, root_certificates=root_certificates,
                                 token=token)

        try:
            self._async = self._loop.run(make())
        except BaseException:
            self._loop.close()
            raise
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[int]] = set()

    @property
    def stats(self) -> ProducerStats:
        """Counters since the producer was made."""
        return self._async.stats

    def enqueue(self, payload: Payload, priority: int = DEFAULT_PRIORITY,
                queue: str = DEFAULT_QUEUE, delay: Delay = None,
                dedup_key: str | None = None, fairness_key: str | None = None) -> int:
        """Enqueue one job and wait for its id (see :meth:`AsyncProducer.enqueue`)."""
        return self._loop.run(self._async.enqueue(payload, priority, queue, delay, dedup_key,
                                                  fairness_key))

    def submit(self, payload: Payload, priority: int = DEFAULT_PRIORITY,
               queue: str = DEFAULT_QUEUE, delay: Delay = None,
               dedup_key: str | None = None,
               fairness_key: str | None = None) -> concurrent.futures.Future[int]:
        """Start enqueueing one job: a future of its id. With ``batching=True``
        the jobs submitted from any threads ride together."""
        # type errors: raise here
        to_new_job(JobSpec(payload, priority, queue, delay, dedup_key, fairness_key))
        future = self._loop.submit(self._async.enqueue(payload, priority, queue, delay, dedup_key,
                                                       fairness_key))
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: concurrent.futures.Future[int]) -> None:
        with self._lock:
            self._pending.discard(future)

    def enqueue_many(self, items: Iterable[JobLike]) -> list[int]:
        """Enqueue several jobs; their ids, in order (see :meth:`AsyncProducer.enqueue_many`)."""
        return self._loop.run(self._async.enqueue_many(list(items)))

    def flush(self) -> None:
        """Wait until every job submitted so far has its answer (or error)."""
        with self._lock:
            pending = list(self._pending)
        concurrent.futures.wait(pending)

    def close(self) -> None:
        """Wait for submitted jobs, then close the connections and the loop thread."""
        try:
            self.flush()
        except ClientClosedError:
            pass
        finally:
            super().close()

