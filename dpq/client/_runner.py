"""``consumer.run(handler, concurrency=N)``: N workers, each taking a job, handling it, settling it.

- The handler returns: the job is acked (unless the handler settled it).
- The handler raises: the job is nacked with a delay growing with its attempt
  (:class:`ExponentialBackoff`), so a failing job comes back later, and after
  the cluster's ``max_attempts`` goes to the dead state. The nack carries
  ``"ExceptionType: message"``, which the cluster keeps as the job's last_error.
- The consumer stops (``stop()``, or SIGINT/SIGTERM): workers take no new
  job and finish the ones in hand; those still running ``grace`` seconds
  later (or at ``stop(now=True)``, or a second signal) are cancelled and
  their jobs given back at once.

Leases are kept alive by the consumer's lease keeper while handlers run.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dpq.client._retry import exponential
from dpq.client.errors import DpqError
from dpq.client.job import AsyncJob

log = logging.getLogger("dpq.client")


@dataclass(frozen=True, slots=True)
class ExponentialBackoff:
    """The delay before a failed job comes back: ``base * 2 ** (attempt - 1)`` seconds,
    at most ``cap``, shortened at random by up to ``jitter`` (a fraction)."""

    base: float = 1.0
    cap: float = 300.0
    jitter: float = 0.1

    def __call__(self, attempt: int) -> float:
        """The delay after attempt number ``attempt`` (1 = the first delivery) failed."""
        delay = exponential(self.base, 2.0, self.cap, max(attempt, 1) - 1)
        return delay * (1 - random.uniform(0, self.jitter))


@dataclass(slots=True)
class RunSummary:
    """What ``run()`` did: jobs ``handled``; of them ``acked``, ``failed`` (the
    handler raised; nacked with backoff), ``given_back`` (cut off at the grace
    deadline; nacked), ``refused`` (the ack or nack was refused: lease lost)."""

    handled: int = 0
    acked: int = 0
    failed: int = 0
    given_back: int = 0
    refused: int = 0


class Runner:
    """Runs the workers of one ``run()`` call."""

    def __init__(self, next_job: Callable[[], Awaitable[AsyncJob | None]],
                 handle: Callable[[AsyncJob], Awaitable[object]], *, concurrency: int,
                 grace: float, backoff: Callable[[int], float], stopping: asyncio.Event,
                 hurry: asyncio.Event) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self._next_job = next_job
        self._handle = handle
        self._concurrency = concurrency
        self._grace = grace
        self._backoff = backoff
        self._stopping = stopping
        self._hurry = hurry
        self.summary = RunSummary()
        # Acks and nacks on their way: a worker does not wait for them.
        self._settling: set[asyncio.Task[bool]] = set()

    async def run(self) -> RunSummary:
        """Until the workers end: on their own (a failure), or after a stop and its grace."""
        workers = [asyncio.create_task(self._work(), name=f"dpq-worker-{i}")
                   for i in range(self._concurrency)]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([*workers, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not all(w.done() for w in workers):
                # Stopping (or one worker failed): the grace for the rest.
                hurry = asyncio.create_task(self._hurry.wait())
                everyone = asyncio.gather(*workers, return_exceptions=True)
                either: list[asyncio.Future[Any]] = [everyone, hurry]
                await asyncio.wait(either, timeout=self._grace,
                                   return_when=asyncio.FIRST_COMPLETED)
                hurry.cancel()
        finally:
            stopping.cancel()
            late = [w for w in workers if not w.done()]
            for worker in late:
                worker.cancel()
            results = await asyncio.gather(*workers, return_exceptions=True)
            await asyncio.gather(*self._settling, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
        return self.summary

    async def _work(self) -> None:
        while True:
            job = await self._next_job()
            if job is None:
                return
            await self._one(job)

    async def _one(self, job: AsyncJob) -> None:
        summary = self.summary
        summary.handled += 1
        try:
            outcome = self._handle(job)
            if inspect.isawaitable(outcome):
                await outcome
        except asyncio.CancelledError:
            if not job.settled:
                log.warning("job %d was still being handled at the grace deadline: given back",
                            job.id)
                summary.given_back += 1
                await self._settle(job.nack(0))
            raise
        except Exception as exc:  # a handler's failure is the job's
            summary.failed += 1
            delay = self._backoff(job.attempt)
            log.warning("job %d (attempt %d) failed: %r; it comes back in %.1fs", job.id,
                        job.attempt, exc, delay, exc_info=exc)
            if not job.settled:
                self._settle_later(job.nack(delay, error=exc))
            return
        if not job.settled:
            self._settle_later(job.ack(), acked=True)

    def _settle_later(self, call: Awaitable[None], acked: bool = False) -> None:
        task = asyncio.create_task(self._settle(call))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        if acked:
            task.add_done_callback(self._count_ack)

    def _count_ack(self, task: asyncio.Task[bool]) -> None:
        if not task.cancelled() and task.exception() is None and task.result():
            self.summary.acked += 1

    async def _settle(self, call: Awaitable[None]) -> bool:
        try:
            await call
        except DpqError as exc:
            self.summary.refused += 1
            log.warning("%s", exc)
            return False
        return True
