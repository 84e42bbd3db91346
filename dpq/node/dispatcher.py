"""Long-polls: hand this node's ready jobs to waiting consumers, under lease.

A Dequeue pops the most urgent ready jobs this node owns from its heap
(reserving them), proposes a Lease for them, and returns the ones the
committed Lease granted. With nothing ready it parks until the applier says
jobs became ready in that queue (:meth:`Dispatcher.wake`, called after every
applied batch, so a long-poll wakes within one commit of an enqueue), until
the next delayed job is due, or until ``wait_ms`` runs out.

Leases that run out are released by an Expire command proposed here, by the
node that owns the jobs (:meth:`Dispatcher.run_expiry`).

Each lease carries a receipt per job, 64 random bits drawn here when the Lease
is proposed (so every replica stores the same one); the consumer gets it with
the job and must quote it to ack, nack or extend.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable

from dpq import clock as clocks
from dpq.proposing.proposer import Proposer
from dpq.proposing.results import Grant
from dpq.proposing.results import granted as grants_of
from dpq.queue.owned import OwnedJobs
from dpq.queue.state import Job, QueueState
from dpq.queue.validate import DEFAULT_LIMITS
from dpq.v1 import log_pb2, queue_pb2

log = logging.getLogger("dpq.node.dispatcher")

#: Lease tokens per Expire command (a leader takes no more per command).
MAX_EXPIRE_REFS = DEFAULT_LIMITS.max_refs


def new_receipt() -> int:
    """64 unguessable bits, never 0 (0 means "no receipt")."""
    while True:
        receipt = secrets.randbits(64)
        if receipt:
            return receipt


class Dispatcher:
    def __init__(self, node_id: int, state: QueueState, owned: OwnedJobs, proposer: Proposer,
                 *, max_attempts: int, expiry_check_s: float = 0.05,
                 expire_retry_s: float = 2.0, clock: clocks.Clock = clocks.monotonic,
                 wall_us: clocks.WallClock = clocks.wall_us) -> None:
        self.node_id = node_id
        self.state = state
        self.owned = owned
        self.proposer = proposer
        self.max_attempts = max_attempts
        self.clock = clock
        self.wall_us = wall_us
        self._expiry_check_s = expiry_check_s
        self._expire_retry_us = int(expire_retry_s * 1e6)
        self._waiters: dict[str, set[asyncio.Event]] = {}
        # queue -> when its consumers started waiting here with nothing to get
        self._starving: dict[str, float] = {}
        self._last_parked: dict[str, float] = {}
        self.delivered = 0  # jobs handed to consumers, for the consume rate
        # queue -> jobs in Lease proposals of this node not applied yet: a limited
        # queue reserves no more than its allowance leaves after them
        self._leasing: dict[str, int] = {}

    @property
    def waiting(self) -> int:
        """Long-polls parked on this node now."""
        return sum(len(w) for w in self._waiters.values())

    def waiting_for(self, queue: str) -> int:
        """Consumers (long-polls and Consume streams) parked on ``queue`` here now."""
        return len(self._waiters.get(queue, ()))

    def starving(self, now: float, gone_after_s: float = 1.0) -> dict[str, float]:
        """Queues whose consumers wait here with nothing to get, and since when.

        A queue stays listed between one long-poll and the next; it drops out
        when jobs are delivered from it, or when nobody parked on it for
        ``gone_after_s``.
        """
        for queue in [q for q in self._starving
                      if q not in self._waiters
                      and now - self._last_parked.get(q, 0) > gone_after_s]:
            del self._starving[queue]
        return dict(self._starving)

    def fed(self, queue: str, now: float) -> None:
        """Work arrived for a starving queue: its idle time starts over."""
        if queue in self._starving:
            self._starving[queue] = now

    def wake(self, queues: Iterable[str]) -> None:
        for queue in queues:
            for event in self._waiters.get(queue, ()):
                event.set()

    async def dequeue(self, queue: str, max_jobs: int, wait_ms: int, lease_ms: int,
                      consumer_id: str) -> list[queue_pb2.Job]:
        deadline = self.clock() + wait_ms / 1000
        while True:
            jobs = await self.lease(queue, max_jobs, lease_ms, consumer_id)
            if jobs:
                return jobs
            remaining = deadline - self.clock()
            if remaining <= 0:
                return []
            await self.park(queue, asyncio.Event(), remaining)

    async def park(self, queue: str, event: asyncio.Event, timeout_s: float | None) -> None:
        """Wait as a consumer with nothing to get: until :meth:`wake` (or anyone) sets
        ``event``, the next delayed job of ``queue`` is due, or ``timeout_s`` (None: no limit)
        runs out. Counted in :attr:`waiting` meanwhile, and marks the queue starving."""
        until = self.state.paused.get(queue)
        next_due = self.owned.next_due_us(queue) if until is None else (until or None)
        next_token = self._next_token_us(queue)
        if next_token is not None and (next_due is None or next_token < next_due):
            next_due = next_token
        if next_due is not None:  # a delayed job, a timed pause's end, the next rate token
            due_s = max(0.0, (next_due - self.wall_us()) / 1e6) + 0.001
            timeout_s = due_s if timeout_s is None else min(timeout_s, due_s)
        waiters = self._waiters.setdefault(queue, set())
        waiters.add(event)
        self._starving.setdefault(queue, self.clock())
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            waiters.discard(event)
            self._last_parked[queue] = self.clock()
            if not waiters:
                self._waiters.pop(queue, None)

    async def lease(self, queue: str, max_jobs: int, lease_ms: int,
                    consumer_id: str) -> list[queue_pb2.Job]:
        """Lease up to ``max_jobs`` ready jobs of ``queue`` in one Lease command; [] if none.

        The one path from the heap to a consumer (long-polls and Consume
        streams). Cancelled while the Lease commits (the consumer went away),
        whatever it grants goes straight back (:meth:`give_back`).
        """
        jobs = await self._lease_ready(queue, max_jobs, lease_ms, consumer_id)
        if jobs:
            self.delivered += len(jobs)
            self._starving.pop(queue, None)
        return jobs

    async def _lease_ready(self, queue: str, max_jobs: int, lease_ms: int,
                           consumer_id: str) -> list[queue_pb2.Job]:
        now = self.wall_us()
        if self.state.paused and self.state.is_paused(queue, now):
            return []  # the Lease would grant nothing: wait for Resume (a queue_changed wake)
        allowed = self.state.lease_allowance(queue, now) if self.state.configs else -1
        if allowed >= 0:  # a limited queue: ask for no more than a Lease could get
            max_jobs = min(max_jobs, allowed - self._leasing.get(queue, 0))
            if max_jobs <= 0:
                return []  # wait for a lease to end or the next token (park wakes)
        ids = self.owned.reserve(queue, max_jobs, now)
        if not ids:
            return []
        if allowed < 0:
            return await self._propose_lease(queue, ids, lease_ms, consumer_id)
        self._leasing[queue] = self._leasing.get(queue, 0) + len(ids)
        try:
            return await self._propose_lease(queue, ids, lease_ms, consumer_id)
        finally:
            left = self._leasing[queue] - len(ids)
            if left:
                self._leasing[queue] = left
            else:
                del self._leasing[queue]
            self.wake([queue])  # consumers held back by this proposal look again

    def _next_token_us(self, queue: str) -> int | None:
        """When a rate-limited queue with no tokens left gets its next one (else None)."""
        limit = self.state.configs.get(queue) if self.state.configs else None
        if limit is None or not limit.rate_mjps:
            return None
        now = self.wall_us()
        at = limit.next_token_us(now)
        return at if at > now else None

    async def _propose_lease(self, queue: str, ids: list[int], lease_ms: int,
                             consumer_id: str) -> list[queue_pb2.Job]:
        command = log_pb2.Command(lease=log_pb2.LeaseCommand(
            node=self.node_id, job_ids=ids, lease_ms=lease_ms, consumer_id=consumer_id,
            receipts=[new_receipt() for _ in ids]))
        leasing = asyncio.ensure_future(self.proposer.submit(command))
        try:
            grants = grants_of(await asyncio.shield(leasing))
        except asyncio.CancelledError:
            # The consumer went away; the lease may still commit. Whatever it
            # grants goes straight back, without costing the jobs an attempt.
            leasing.add_done_callback(lambda done: self._give_back(ids, done))
            raise
        except BaseException:
            self.owned.release(ids)
            raise
        granted = {g.job_id for g in grants}
        self.owned.release(i for i in ids if i not in granted)
        jobs = self.state.jobs
        step = self.owned.aging_step_us
        return [_to_pb(jobs[g.job_id], g, step) for g in grants if g.job_id in jobs]

    def give_back(self, jobs: Iterable[queue_pb2.Job]) -> None:
        """Jobs leased but never sent to their consumer: ready again at once, no attempt
        spent (an undelivered Nack)."""
        refs = [queue_pb2.JobRef(job_id=j.job_id, attempt=j.attempt, receipt=j.receipt)
                for j in jobs]
        if refs:
            command = log_pb2.Command(nack=log_pb2.NackCommand(
                jobs=refs, max_attempts=self.max_attempts, undelivered=True))
            task = asyncio.ensure_future(self.proposer.submit(command))
            task.add_done_callback(_log_failure)

    def _give_back(self, ids: list[int], leasing: asyncio.Future) -> None:
        grants = () if leasing.cancelled() or leasing.exception() else grants_of(leasing.result())
        granted = {g.job_id for g in grants}
        self.owned.release(i for i in ids if i not in granted)
        self.give_back(queue_pb2.Job(job_id=g.job_id, attempt=g.attempt, receipt=g.receipt)
                       for g in grants)

    async def run_expiry(self) -> None:
        """Propose an Expire for this node's leases that ran out, forever."""
        while True:
            await asyncio.sleep(self._expiry_check_s)
            self.expire_due()

    def expire_due(self) -> int:
        """Propose an Expire for the leases that ran out by now; how many leases."""
        expired = self.owned.expired_leases(self.wall_us(), self._expire_retry_us)
        for start in range(0, len(expired), MAX_EXPIRE_REFS):
            command = log_pb2.Command(expire=log_pb2.ExpireCommand(
                jobs=[queue_pb2.JobRef(job_id=j, attempt=a, receipt=r)
                      for j, a, r in expired[start:start + MAX_EXPIRE_REFS]],
                max_attempts=self.max_attempts))
            task = asyncio.ensure_future(self.proposer.submit(command))
            task.add_done_callback(_log_failure)
        return len(expired)


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a lease housekeeping proposal failed (the leases expire instead): %s",
                    task.exception())


def _to_pb(job: Job, grant: Grant, aging_step_us: int) -> queue_pb2.Job:
    return queue_pb2.Job(job_id=job.job_id, queue=job.queue, priority=job.priority,
                         payload=job.payload, created_at_us=job.created_at_us,
                         attempt=grant.attempt, lease_expires_at_us=grant.lease_expires_at_us,
                         receipt=grant.receipt,
                         ready_at_us=max(job.created_at_us, job.ready_at_us),
                         aging_step_us=aging_step_us)
