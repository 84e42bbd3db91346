"""Consumers: :class:`AsyncConsumer` (asyncio) and :class:`Consumer` (blocking).

A node serves only the jobs it owns, so a consumer learns the nodes with
ClusterInfo (from a gateway or any node) and keeps a Consume stream open on
every one of them (``dpq.client._consume_stream``; a long-poll where the node
or gateway has none), skipping a node that fails and retrying it with backoff, and
refreshing the node list every ``refresh_interval`` seconds. Jobs arrive in a
small local buffer and are handed out most urgent first by the nodes' aged key
(``dpq.client._ordered``): a job waiting there is overtaken by a more urgent
one that arrives from another node.

``Consumer`` runs an ``AsyncConsumer`` on a private event loop thread (see
``dpq.client._loop``): one implementation, and grpc.aio holds the long-polls
on many nodes at once without a thread each. Its ``run()`` calls a blocking
handler on a pool of ``concurrency`` threads.

Two ways to consume:

- iterate (``for job in consumer`` / ``async for``), and ack or nack each
  job. A job not settled stays held (its lease extended for up to
  ``max_hold``) and counts against ``prefetch``, so a consumer that never
  acks stops receiving.
- ``run(handler, concurrency=N)``: see ``dpq.client._runner``.

Leases of held jobs are extended in the background (``dpq.client._keeper``).
``close()`` gives back (nacks, delay 0) every job still held; a given-back
job's next delivery counts as a new attempt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from dpq.client._closing import AsyncClient, BlockingClient
from dpq.client._endpoints import (
    Channels,
    Endpoints,
    PathLike,
    Targets,
    parse_targets,
    security,
)
from dpq.client._fleet import PollerFleet
from dpq.client._held import Held, HoldState, JobRecord
from dpq.client._keeper import LeaseKeeper
from dpq.client._loop import LoopThread
from dpq.client._membership import Membership
from dpq.client._ordered import UrgentFirst
from dpq.client._poller import PollSpec
from dpq.client._retry import RetryPolicy
from dpq.client._runner import ExponentialBackoff, Runner, RunSummary
from dpq.client._settle import Settler
from dpq.client._signals import stop_on_signals
from dpq.client._tasks import TaskSet
from dpq.client.errors import ClientClosedError
from dpq.client.job import AsyncJob, Job
from dpq.client.spec import DEFAULT_QUEUE


def _default_consumer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class AsyncConsumer(AsyncClient):
    """Consumes one queue from asyncio code.

    ``targets``: ``HOST:PORT`` of a gateway or of nodes (None: ``$DPQ_ADDR``,
    else ``127.0.0.1:7100``); with ``discover`` (the default) they are asked
    for the node list and every node is polled, else the targets themselves.
    ``wait``: seconds a long-poll waits for a job. ``max_jobs``: jobs one
    long-poll may take. ``lease``: seconds a job is leased for (extended while
    held, after ``extend_fraction`` of it, for at most ``max_hold`` seconds).
    ``prefetch``: jobs held beyond those being worked on — when iterating
    (default ``max_jobs``), jobs handed out and not yet settled count too;
    with ``run()`` (default ``max_jobs`` too) they come on top of ``concurrency``: a job
    waits in the buffer (its lease kept alive) while a long-poll round trip is under way.
    ``nack_backoff``: ``attempt -> seconds`` before a job whose handler raised
    comes back (default :class:`ExponentialBackoff`). ``retry``: for acks,
    nacks and extensions (:class:`RetryPolicy`); also paces retries of failed
    nodes. ``tls_dir`` / ``root_certificates`` / ``token``: TLS and the bearer
    token, as for :class:`~dpq.client.AsyncProducer`.
    """

    def __init__(self, targets: Targets = None, *, queue: str = DEFAULT_QUEUE,
                 wait: float = 10.0, max_jobs: int = 10, lease: float = 30.0,
                 prefetch: int | None = None, consumer_id: str | None = None,
                 discover: bool = True, refresh_interval: float = 5.0,
                 extend_fraction: float = 0.5, max_hold: float = 3600.0,
                 nack_backoff: Callable[[int], float] | None = None,
                 retry: RetryPolicy | None = None, tls_dir: PathLike | None = None,
                 root_certificates: bytes | PathLike | None = None,
                 token: str | None = None) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, not {max_jobs}")
        if lease <= 0 or wait < 0:
            raise ValueError(f"lease must be positive and wait not negative (got {lease}, {wait})")
        if prefetch is not None and prefetch < 0:
            raise ValueError(f"prefetch must not be negative, not {prefetch}")
        self._seeds = parse_targets(targets)
        self._max_jobs = max_jobs
        self._prefetch = prefetch
        self._retry = retry or RetryPolicy()
        self._nack_backoff = nack_backoff or ExponentialBackoff()
        self._channels = Channels(security(tls_dir, root_certificates, token))
        self._held = Held()
        self._settler = Settler(Endpoints(self._channels, self._seeds), self._retry, self._held)
        self._keeper = LeaseKeeper(self._held, self._settler, lease, extend_fraction)
        self._tasks = TaskSet(self._crashed)
        spec = PollSpec(queue, max_jobs, wait, lease, max_hold,
                        consumer_id or _default_consumer_id())
        self._fleet = PollerFleet(self._channels, spec, self._held, self._retry, self._tasks,
                                  self._settler.endpoints, self._seeds, self._deliver,
                                  self._crashed)
        self._settler.route = self._fleet.stream_for  # a node's jobs settle on its stream
        self._membership = Membership(self._seeds, self._channels, discover=discover,
                                      interval=refresh_interval, retry=self._retry,
                                      on_nodes=self._fleet.update)
        self._buffer = UrgentFirst()
        self._started = False
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()
        self._failure: BaseException | None = None
        self._wind_down: asyncio.Task[None] | None = None
        self._membership_task: asyncio.Task[Any] | None = None
        self._closed = False

    # ---------------------------------------------------------------- public

    @property
    def nodes(self) -> list[str]:
        """The addresses long-polled now."""
        return self._fleet.addresses

    @property
    def held(self) -> int:
        """Jobs held now (buffered, handed out or being handled)."""
        return len(self._held)

    def __aiter__(self) -> AsyncConsumer:
        return self

    async def __anext__(self) -> AsyncJob:
        """The next job; ends once the consumer is stopped."""
        job = await self._next_job(self._iteration_capacity())
        if job is None:
            raise StopAsyncIteration
        return job

    async def receive(self, timeout: float | None = None) -> AsyncJob | None:
        """The next job, or None after ``timeout`` seconds or once stopped."""
        try:
            return await asyncio.wait_for(self._next_job(self._iteration_capacity()), timeout)
        except TimeoutError:
            return None

    async def run(self, handler: Callable[[AsyncJob], Awaitable[object]], concurrency: int = 1,
                  *, grace: float = 30.0, handle_signals: bool = True) -> RunSummary:
        """Handle jobs with ``handler`` on ``concurrency`` tasks until stopped.

        Acks a job when its handler returns, nacks it with backoff when the
        handler raises. Returns after :meth:`stop` (or SIGINT/SIGTERM, when
        ``handle_signals`` and on the main thread), once the jobs in hand are
        finished — or given back, for those still running ``grace`` seconds
        after the stop (or at ``stop(now=True)``, or a second signal). Raises
        what stopped the consumer otherwise (e.g. ``InvalidArgumentError`` for
        a bad queue).
        """
        capacity = concurrency + (self._max_jobs if self._prefetch is None else self._prefetch)
        runner = Runner(lambda: self._next_job(capacity), handler, concurrency=concurrency,
                        grace=grace, backoff=self._nack_backoff, stopping=self._stopping,
                        hurry=self._hurry)
        loop = asyncio.get_running_loop()
        if handle_signals:
            with stop_on_signals(lambda now: self.stop(now=now), loop):
                summary = await runner.run()
        else:
            summary = await runner.run()
        if self._failure is not None:
            raise self._failure
        return summary

    def stop(self, *, now: bool = False) -> None:
        """Take no new jobs: iteration ends, ``run()`` finishes the jobs in hand.

        Buffered jobs are given back at once. ``now=True`` (also a second
        SIGINT/SIGTERM during ``run()``) skips the grace: handlers still
        running are cancelled and their jobs given back. Call it on the
        consumer's event loop.
        """
        if now:
            self._hurry.set()
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._buffer.wake()
        if self._started:
            self._wind_down = asyncio.get_running_loop().create_task(self._stop_polling())

    async def close(self) -> None:
        """Stop, give back every job still held, close the connections."""
        if self._closed:
            return
        self.stop()
        try:
            if self._wind_down is not None:
                await self._wind_down
            await self._settler.drain()
            await self._settler.release(self._held.records())
        finally:
            self._closed = True
            await self._tasks.close()
            await self._channels.close()

    # --------------------------------------------------------------- inside

    async def _gather(self, timeout: float) -> None:
        """Start polling; return once every node answered with what it had ready
        (those jobs are then held, in order), or after ``timeout`` seconds, or
        once stopped. For ``dpq consume``: its first line is then the most
        urgent job of the whole cluster, not of the node that answered first."""
        self._start(self._iteration_capacity())
        gathering = asyncio.ensure_future(self._fleet.first_round())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([gathering, stopping], timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            gathering.cancel()
            stopping.cancel()

    def _iteration_capacity(self) -> int:
        return self._prefetch or self._max_jobs

    def _start(self, capacity: int) -> None:
        if self._closed:
            raise ClientClosedError("the consumer is closed")
        if self._started or self._stopping.is_set():
            return
        self._started = True
        self._held.capacity = max(1, capacity)
        self._membership_task = self._tasks.spawn(self._membership.run(), "membership")
        self._tasks.spawn(self._keeper.run(), "lease-keeper")

    async def _next_job(self, capacity: int) -> AsyncJob | None:
        self._start(capacity)
        while True:
            if self._failure is not None:
                raise self._failure
            if self._stopping.is_set():
                return None
            item = await self._buffer.get()
            if item is None:
                self._buffer.wake()  # for the next waiter
                continue
            if self._stopping.is_set():
                # Stopped while waiting: not handed out; given back with the rest.
                self._buffer.put(item)
                continue
            if item.state is HoldState.HELD:
                return AsyncJob(item, self._settler)

    def _deliver(self, record: JobRecord) -> None:
        self._buffer.put(record)

    def _crashed(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._buffer.wake()
        if not self._stopping.is_set():
            self.stop()

    async def _stop_polling(self) -> None:
        if self._membership_task is not None:
            await TaskSet.cancel(self._membership_task)
        await self._fleet.close()
        buffered = self._buffer.drain()
        self._buffer.wake()
        await self._settler.release(buffered)


class Consumer(BlockingClient):
    """Consumes one queue from blocking code; the same arguments as :class:`AsyncConsumer`.

    ``for job in consumer:`` yields :class:`Job` objects; ``run(handler)``
    calls a blocking ``handler(job)`` on ``concurrency`` threads. Use it as
    ``with Consumer(...) as consumer:`` or call :meth:`close`.
    """

    def __init__(self, targets: Targets = None, *, queue: str = DEFAULT_QUEUE,
                 wait: float = 10.0, max_jobs: int = 10, lease: float = 30.0,
                 prefetch: int | None = None, consumer_id: str | None = None,
                 discover: bool = True, refresh_interval: float = 5.0,
                 extend_fraction: float = 0.5, max_hold: float = 3600.0,
                 nack_backoff: Callable[[int], float] | None = None,
                 retry: RetryPolicy | None = None, tls_dir: PathLike | None = None,
                 root_certificates: bytes | PathLike | None = None,
                 token: str | None = None) -> None:
        self._loop = LoopThread("dpq-consumer")

        async def make() -> AsyncConsumer:
            return AsyncConsumer(
                targets, queue=queue, wait=wait, max_jobs=max_jobs, lease=lease,
                prefetch=prefetch, consumer_id=consumer_id, discover=discover,
                refresh_interval=refresh_interval, extend_fraction=extend_fraction,
                max_hold=max_hold, nack_backoff=nack_backoff, retry=retry, tls_dir=tls_dir,
                root_certificates=root_certificates, token=token)

        try:
            self._async = self._loop.run(make())
        except BaseException:
            self._loop.close()
            raise

    @property
    def nodes(self) -> list[str]:
        """The addresses long-polled now."""
        return self._async.nodes

    @property
    def held(self) -> int:
        """Jobs held now (buffered, handed out or being handled)."""
        return self._async.held

    def __iter__(self) -> Consumer:
        return self

    def __next__(self) -> Job:
        """The next job (blocks); ends once the consumer is stopped."""
        job = self._loop.run(self._async.receive())
        if job is None:
            raise StopIteration
        return Job(job, self._loop)

    def receive(self, timeout: float | None = None) -> Job | None:
        """The next job, or None after ``timeout`` seconds or once stopped."""
        job = self._loop.run(self._async.receive(timeout))
        return Job(job, self._loop) if job is not None else None

    def _gather(self, timeout: float) -> None:
        """See :meth:`AsyncConsumer._gather`."""
        self._loop.run(self._async._gather(timeout))

    def run(self, handler: Callable[[Job], object], concurrency: int = 1, *,
            grace: float = 30.0, handle_signals: bool = True) -> RunSummary:
        """Call ``handler(job)`` on ``concurrency`` threads until stopped.

        The same rules as :meth:`AsyncConsumer.run`. A handler still running
        at the grace deadline cannot be interrupted: its job is given back and
        its thread left to finish on its own.
        """
        pool = concurrent.futures.ThreadPoolExecutor(concurrency,
                                                     thread_name_prefix="dpq-handler")
        loop = self._loop

        def handle(job: AsyncJob) -> Awaitable[object]:
            return asyncio.get_running_loop().run_in_executor(pool, handler, Job(job, loop))

        try:
            if handle_signals:
                with stop_on_signals(lambda now: self.stop(now=now)):
                    return loop.run(self._async.run(handle, concurrency, grace=grace,
                                                    handle_signals=False))
            return loop.run(self._async.run(handle, concurrency, grace=grace,
                                            handle_signals=False))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def stop(self, *, now: bool = False) -> None:
        """Take no new jobs (see :meth:`AsyncConsumer.stop`); safe from any thread
        and from signal handlers."""
        self._loop.call_soon(lambda: self._async.stop(now=now))

    def close(self) -> None:
        """Stop, give back every job still held, close the connections and the loop thread."""
        super().close()
