"""What a node does for each public RPC, in plain Python.

The Queue servicer only translates protobuf to these calls and their
exceptions to gRPC status codes; everything a request means happens here:
validation (nothing is proposed unless the whole request is valid), the memory
budget, owner assignment for new jobs, the command proposed, and waiting for
PostgreSQL when the node is configured to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

from dpq._wrr import SmoothWRR
from dpq.errors import NotFound, ResourceExhausted
from dpq.node import pglag
from dpq.node.applier import SlotWatch
from dpq.node.config import QueuePolicy
from dpq.node.consume import Consumers
from dpq.node.dispatcher import Dispatcher
from dpq.node.router import now_us
from dpq.node.schedule_ops import ScheduleOperations
from dpq.proposing.proposer import Proposer
from dpq.proposing.results import (
    Result,
    affected,
    configured,
    enqueued,
    not_applied,
    paused,
)
from dpq.queue import budget, inspect, validate
from dpq.queue.results import Settled
from dpq.queue.rules import PRIORITY_MAX
from dpq.queue.state import QueueState
from dpq.v1 import log_pb2, queue_pb2

#: The Paxos log kept in memory between snapshots may take this share of the budget
#: (1/LOG_SHARE); past it the node takes a snapshot early.
LOG_SHARE = 4
#: How long an operator's change waits to be applied on the node asked (it is
#: committed already; a read that follows may then see the state before it).
APPLY_WAIT_S = 5.0


class NodeOperations(ScheduleOperations):
    def __init__(self, node_id: int, peer_ids: Sequence[int], state: QueueState,
                 proposer: Proposer, dispatcher: Dispatcher, policy: QueuePolicy,
                 reachable: Callable[[int], bool], written: SlotWatch,
                 cluster_info: Callable[[], queue_pb2.ClusterInfoResponse],
                 log_bytes: Callable[[], int] = lambda: 0,
                 applied: SlotWatch | None = None) -> None:
        self.node_id = node_id
        self.peer_ids = sorted(peer_ids)
        self.members = frozenset(peer_ids)
        self.state = state
        self.proposer = proposer
        self.dispatcher = dispatcher
        self.policy = policy
        self._reachable = reachable
        self._written = written
        # this replica's applied slot: an operator's change is answered once it is
        # applied here too, so a read that follows on this node sees it
        self._applied = applied
        self._cluster_info = cluster_info
        # the Paxos log kept in memory since the last snapshot
        self._log_bytes = log_bytes
        #: The node snapshots (and drops its in-memory log) when the log holds this much.
        self.log_bytes_limit = policy.memory_budget_bytes // LOG_SHARE
        self._owners = SmoothWRR()
        #: The Consume streams open on this node, and their message counts.
        self.consumers = Consumers(dispatcher, self, policy.limits)
        self._owner_set: tuple[int, ...] = ()

    # ------------------------------------------------------------------ enqueue

    async def enqueue(self, jobs: Sequence[queue_pb2.NewJob]) -> list[int]:
        limits = self.policy.limits
        validate.new_jobs(jobs, limits)
        pglag.check(self.state, self.policy.max_postgres_lag_slots)
        dedup_window_us = self.policy.dedup_window_ms * 1000
        self._check_budget(self.state.cost_of(jobs, dedup_window_us), budget.least_urgent(jobs))
        command = log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
            jobs=jobs, owners=self._pick_owners(len(jobs)), dedup_window_us=dedup_window_us))
        slot, result = await self.proposer.submit_at(command)
        ids = enqueued(result)
        if self.policy.wait_for_postgres:
            await self._written.wait_for(slot)
        return ids

    def _check_budget(self, incoming: int, priority: int) -> None:
        """``incoming``: what the new jobs cost (``QueueState.cost_of``), not just payloads;
        ``priority``: their least urgent (``dpq.queue.budget``)."""
        why = budget.refusal(self.state.held_bytes + self._log_bytes(), incoming, priority,
                             self.policy.memory_budget_bytes)
        if why is not None:
            raise ResourceExhausted(why)

    def admit_forwarded(self, batch: log_pb2.CommandBatch | bytes) -> log_pb2.CommandBatch:
        """Check a batch a gateway or node proposes through this leader; return it decoded.

        Raises ``InvalidArgument`` unless every command is valid
        (:func:`dpq.queue.validate.commands`, this node's limits, the cluster's
        members), ``Unavailable`` if it enqueues while PostgreSQL is too far
        behind, and ``ResourceExhausted`` if its new jobs would pass the memory
        budget. Acks and leases always get through: they free memory.
        """
        if isinstance(batch, bytes):
            batch = validate.proposal(batch, self.policy.limits, self.members)
        else:
            validate.commands(batch, self.policy.limits, self.members)
        enqueues = [c.enqueue for c in batch.commands if c.HasField("enqueue")]
        if enqueues:
            pglag.check(self.state, self.policy.max_postgres_lag_slots)
            self._check_budget(sum(self.state.cost_of(e.jobs, e.dedup_window_us)
                                   for e in enqueues),
                               max(budget.least_urgent(e.jobs) for e in enqueues))
        return batch

    def _pick_owners(self, n: int) -> list[int]:
        # Without a gateway, spread evenly over the nodes that answer.
        live = tuple(p for p in self.peer_ids if self._reachable(p)) or (self.node_id,)
        if live != self._owner_set:
            self._owners.set_weights(live, [1] * len(live))
            self._owner_set = live
        return list(self._owners.pick_many(n))

    # ------------------------------------------------------------------ consume

    async def dequeue(self, request: queue_pb2.DequeueRequest) -> list[queue_pb2.Job]:
        queue = validate.dequeue(request, self.policy.limits)
        return await self.dispatcher.dequeue(queue, request.max_jobs, request.wait_ms,
                                             request.lease_ms, request.consumer_id)

    def consume(self, requests: AsyncIterator[queue_pb2.ConsumeRequest],
                ) -> AsyncIterator[queue_pb2.ConsumeResponse]:
        return self.consumers.serve(requests)

    async def ack(self, refs: Sequence[queue_pb2.JobRef]) -> list[str]:
        validate.refs(refs, self.policy.limits)
        return _per_ref(await self.proposer.submit(
            log_pb2.Command(ack=log_pb2.AckCommand(jobs=refs))))

    async def nack(self, refs: Sequence[queue_pb2.JobRef], delay_ms: int,
                   error: str = "") -> list[str]:
        validate.refs(refs, self.policy.limits)
        validate.nack_delay(delay_ms, self.policy.limits)
        validate.nack_error(error, self.policy.limits)
        return _per_ref(await self.proposer.submit(log_pb2.Command(nack=log_pb2.NackCommand(
            jobs=refs, delay_ms=delay_ms, max_attempts=self.policy.max_attempts,
            error=error))))

    async def extend(self, refs: Sequence[queue_pb2.JobRef], lease_ms: int) -> list[str]:
        validate.refs(refs, self.policy.limits)
        validate.lease(lease_ms, self.policy.limits)
        return _per_ref(await self.proposer.submit(log_pb2.Command(extend=log_pb2.ExtendCommand(
            jobs=refs, lease_ms=lease_ms))))

    # ------------------------------------------------------------ managing jobs

    async def cancel_jobs(self, selector: queue_pb2.JobSelector) -> queue_pb2.JobsAffected:
        validate.selector(selector, self.policy.limits)
        return await self._affect(log_pb2.Command(cancel=log_pb2.CancelCommand(
            selector=selector)))

    async def retry_jobs(self, selector: queue_pb2.JobSelector) -> queue_pb2.JobsAffected:
        validate.selector(selector, self.policy.limits)
        return await self._affect(log_pb2.Command(retry=log_pb2.RetryCommand(selector=selector)))

    async def set_priority(self, selector: queue_pb2.JobSelector,
                           priority: int) -> queue_pb2.JobsAffected:
        validate.selector(selector, self.policy.limits)
        validate.priority(priority)
        return await self._affect(log_pb2.Command(set_priority=log_pb2.SetPriorityCommand(
            selector=selector, priority=priority)))

    async def purge_queue(self, queue: str) -> queue_pb2.JobsAffected:
        queue = validate.queue_name(queue, "queue", self.policy.limits)
        return await self._affect(log_pb2.Command(purge=log_pb2.PurgeCommand(queue=queue)))

    async def pause_queue(self, queue: str, duration_ms: int) -> queue_pb2.QueuePaused:
        queue = validate.queue_name(queue, "queue", self.policy.limits)
        validate.pause_duration(duration_ms, self.policy.limits)
        return await self._pause(log_pb2.Command(pause=log_pb2.PauseCommand(
            queue=queue, duration_ms=duration_ms)))

    async def resume_queue(self, queue: str) -> queue_pb2.QueuePaused:
        queue = validate.queue_name(queue, "queue", self.policy.limits)
        return await self._pause(log_pb2.Command(resume=log_pb2.ResumeCommand(queue=queue)))

    async def set_queue_config(self, change: queue_pb2.SetQueueConfigRequest,
                               ) -> queue_pb2.QueueConfig:
        validate.queue_config(change, self.policy.limits)  # "" is the default queue
        _, result = await self._operate(log_pb2.Command(
            queue_config=log_pb2.QueueConfigCommand(change=change)))
        return configured(result).config

    async def get_queue_config(self, queue: str) -> queue_pb2.QueueConfig:
        queue = validate.queue_name(queue, "queue", self.policy.limits)
        return self._config_of(queue)

    def _config_of(self, queue: str) -> queue_pb2.QueueConfig:
        settings = self.state.configs.get(queue)
        return settings.to_pb(queue) if settings is not None else queue_pb2.QueueConfig(
            queue=queue)

    async def _affect(self, command: log_pb2.Command) -> queue_pb2.JobsAffected:
        slot, result = await self._operate(command)
        done = affected(result)
        return queue_pb2.JobsAffected(count=done.count, deferred=done.deferred, slot=slot)

    async def _pause(self, command: log_pb2.Command) -> queue_pb2.QueuePaused:
        slot, result = await self._operate(command)
        now = paused(result)
        return queue_pb2.QueuePaused(queue=now.queue, paused=now.paused,
                                     paused_until_us=now.until_us, was_paused=now.was_paused,
                                     slot=slot)

    async def _operate(self, command: log_pb2.Command) -> tuple[int, Result | None]:
        """Propose an operator's command; answer once this replica applied it too."""
        slot, result = await self.proposer.submit_at(command)
        if self._applied is not None:
            try:  # committed already: a replica slow to learn it only delays the answer
                await asyncio.wait_for(self._applied.wait_for(slot), APPLY_WAIT_S)
            except TimeoutError:
                pass
        return slot, result

    async def get_job(self, job_id: int, with_payload: bool = True) -> queue_pb2.JobInfo:
        validate.job_id(job_id)
        info = inspect.job_info(self.state, job_id, now_us(), self.dispatcher.owned.aging_step_us,
                                with_payload)
        if info is None:
            raise NotFound(f"job_id: no job {job_id} on node {self.node_id} (never enqueued, "
                           "or it ended long enough ago to be forgotten)")
        return info

    async def list_jobs(self, request: queue_pb2.ListJobsRequest) -> queue_pb2.ListJobsResponse:
        limit = validate.list_jobs(request, self.policy.limits)
        return inspect.list_jobs(self.state, request, limit, now_us(),
                                 self.dispatcher.owned.aging_step_us)

    async def explain_job(self, job_id: int) -> queue_pb2.ExplainJobResponse:
        validate.job_id(job_id)
        job = self.state.jobs.get(job_id)
        waiting = (self.dispatcher.waiting_for(job.queue)
                   if job is not None and job.owner == self.node_id else None)
        out = inspect.explain(self.state, job_id, now_us(), self.dispatcher.owned.aging_step_us,
                              node_id=self.node_id, waiting_consumers=waiting)
        if out is None:
            raise NotFound(f"job_id: no job {job_id} on node {self.node_id} (never enqueued, "
                           "or it ended long enough ago to be forgotten)")
        return out

    # ---------------------------------------------------------------- read-only

    async def stats(self, queue: str,
                    include_idle: bool = False) -> list[queue_pb2.QueueStats]:
        """Depths and ages now, and counts since this node started (``dpq.queue.totals``).

        ``queue`` "": every queue that holds jobs or is paused, and with
        ``include_idle`` also the queues that only have counts."""
        state = self.state
        if queue:
            names = [validate.queue_name(queue, "queue", self.policy.limits)]
        else:
            names = state.queues()
            if include_idle:
                names = sorted(set(names) | set(state.totals.queues))
        now = now_us()
        out = []
        for name in names:
            ready, delayed, leased, dead = state.stats(name, now)
            counts = state.counts.get(name)
            stats = queue_pb2.QueueStats(
                queue=name, ready_by_priority=ready, delayed=delayed, leased=leased, dead=dead,
                paused=state.is_paused(name, now),
                paused_until_us=state.paused.get(name, 0),
                cancelled=counts.cancelled if counts is not None else 0,
                config=self._config_of(name),
                oldest_ready_age_ms=[state.ages.age_us(name, p, now) // 1000
                                     for p in range(1, PRIORITY_MAX + 1)])
            totals = state.totals.get(name)
            if totals is not None:
                stats.enqueued_by_priority.extend(totals.enqueued)
                stats.delivered_by_priority.extend(totals.delivered)
                stats.acked_by_priority.extend(totals.acked)
                stats.nacked, stats.expired = totals.nacked, totals.expired
                stats.died, stats.cancelled_total = totals.died, totals.cancelled
            else:
                stats.enqueued_by_priority.extend([0] * PRIORITY_MAX)
                stats.delivered_by_priority.extend([0] * PRIORITY_MAX)
                stats.acked_by_priority.extend([0] * PRIORITY_MAX)
            out.append(stats)
        return out

    async def cluster_info(self) -> queue_pb2.ClusterInfoResponse:
        return self._cluster_info()


def _per_ref(result: Result | None) -> list[str]:
    """Per-reference refusals ("" = done; a ``Refusal`` is a str); a command refused whole
    raises."""
    if isinstance(result, Settled):
        return result.errors()
    raise not_applied(result)
