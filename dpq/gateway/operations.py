"""What a gateway does for each public RPC: batch enqueues, route the rest.

* Enqueue: validated here, owners picked by health, then proposed through the
  batching proposer (many requests, one Paxos slot).
* Dequeue: forwarded to the reachable node with the most ready jobs (a node
  serves the jobs it owns; the client library instead keeps a long-poll open
  on every node, and idle nodes steal backlogs, so either way jobs flow).
* Consume: not served (UNIMPLEMENTED): a node pushes only the jobs it owns, so
  the client library opens its streams on the nodes and falls back to
  long-polls through a gateway.
* Ack / Nack / ExtendLease, Stats, ClusterInfo, and the managing of jobs
  (GetJob, ListJobs, the bulk actions, pauses): forwarded to the leader, whose
  replica is the freshest, or to any reachable node when no leader is known.
* ExplainJob: forwarded to the job's owner node, the only one that knows the
  consumers waiting for it (the leader says who owns it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import grpc

from dpq.errors import Forwarded, Unavailable, Unimplemented
from dpq.gateway import balancer
from dpq.gateway.monitor import HealthMonitor, NodeView
from dpq.gateway.owners import OwnerPicker
from dpq.gateway.schedule_ops import GatewayScheduleOperations
from dpq.proposing.proposer import Proposer
from dpq.proposing.results import enqueued
from dpq.queue import validate
from dpq.v1 import log_pb2, queue_pb2

FORWARD_TIMEOUT_S = 15.0


class GatewayOperations(GatewayScheduleOperations):
    def __init__(self, monitor: HealthMonitor, proposer: Proposer, owners: OwnerPicker,
                 limits: validate.Limits = validate.DEFAULT_LIMITS,
                 dedup_window_ms: int = validate.DEFAULT_DEDUP_WINDOW_MS) -> None:
        self.monitor = monitor
        self.proposer = proposer
        self.owners = owners
        self.limits = limits
        self._dedup_window_us = dedup_window_ms * 1000
        self.jobs = 0
        #: The server's messages in and out per method (set by the app once it serves).
        self.messages: Callable[[], dict[str, float]] = dict

    async def enqueue(self, jobs: Sequence[queue_pb2.NewJob]) -> list[int]:
        validate.new_jobs(jobs, self.limits)
        command = log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
            jobs=jobs, owners=self.owners.pick(len(jobs)), dedup_window_us=self._dedup_window_us))
        ids = enqueued(await self.proposer.submit(command))
        self.jobs += len(jobs)
        return ids

    async def dequeue(self, request: queue_pb2.DequeueRequest) -> list[queue_pb2.Job]:
        validate.dequeue(request, self.limits)
        candidates = sorted(self.monitor.live(),
                            key=lambda n: (-n.report.ready_depth, n.report.waiting_consumers))
        response = await self._forward(candidates, "Dequeue", request,
                                       timeout=request.wait_ms / 1000 + FORWARD_TIMEOUT_S)
        return list(response.jobs)

    def consume(self, requests: AsyncIterator[queue_pb2.ConsumeRequest],
                ) -> AsyncIterator[queue_pb2.ConsumeResponse]:
        raise Unimplemented("Consume is served by the nodes, not by a gateway: open it on "
                            "the nodes ClusterInfo lists, or long-poll with Dequeue here")

    async def ack(self, refs: Sequence[queue_pb2.JobRef]) -> list[str]:
        validate.refs(refs, self.limits)
        response = await self._to_leader("Ack", queue_pb2.AckRequest(jobs=refs))
        return [r.error for r in response.results]

    async def nack(self, refs: Sequence[queue_pb2.JobRef], delay_ms: int,
                   error: str = "") -> list[str]:
        validate.refs(refs, self.limits)
        validate.nack_delay(delay_ms, self.limits)
        validate.nack_error(error, self.limits)
        response = await self._to_leader(
            "Nack", queue_pb2.NackRequest(jobs=refs, delay_ms=delay_ms, error=error))
        return [r.error for r in response.results]

    async def extend(self, refs: Sequence[queue_pb2.JobRef], lease_ms: int) -> list[str]:
        validate.refs(refs, self.limits)
        validate.lease(lease_ms, self.limits)
        response = await self._to_leader(
            "ExtendLease", queue_pb2.ExtendLeaseRequest(jobs=refs, lease_ms=lease_ms))
        return [r.error for r in response.results]

    async def stats(self, queue: str,
                    include_idle: bool = False) -> list[queue_pb2.QueueStats]:
        """The leader's answer, every field as it is (ages and counts included)."""
        if queue:
            validate.queue_name(queue, "queue", self.limits)
        response = await self._to_leader("Stats", queue_pb2.StatsRequest(
            queue=queue, include_idle=include_idle))
        return list(response.queues)

    async def cluster_info(self) -> queue_pb2.ClusterInfoResponse:
        """The leader's view, with each node's health and balancer share added."""
        info = await self._to_leader("ClusterInfo", queue_pb2.ClusterInfoRequest())
        weights = dict(zip(*balancer.weights(self.monitor.health())))
        for node in info.nodes:
            view = self.monitor.by_id(node.node_id)
            if view is not None and view.report is not None:
                r = view.report
                node.cpu_percent, node.ready_depth = r.cpu_percent, r.ready_depth
                node.consume_rate, node.waiting_consumers = r.consume_rate, r.waiting_consumers
                node.ballot = r.ballot
                node.learner = node.learner or r.learner
                node.serving = r.serving
                if node.node_id != info.leader_id:  # the leader filled in its own, exactly
                    node.commit_index, node.applied_index = r.commit_index, r.applied_index
                    node.max_loop_stall_ms = r.max_loop_stall_ms
                    node.snapshot_slot = r.snapshot_slot
                    node.snapshots_installed = r.snapshots_installed
            node.balancer_weight = weights.get(node.node_id, 0)
            node.assigned_jobs = self.owners.assigned[node.node_id]
        info.served_by = "gateway"
        info.node_id = 0
        info.counters["gateway.proposals"] = self.proposer.proposals
        info.counters["gateway.requests"] = self.proposer.commands
        info.counters["gateway.jobs"] = self.jobs
        info.counters.update(self.messages())
        return info

    # ------------------------------------------------------------ managing jobs
    # Checked here too, so a bad request costs no hop; the leader checks again.

    async def get_job(self, job_id: int, with_payload: bool = True) -> queue_pb2.JobInfo:
        validate.job_id(job_id)
        return await self._to_leader("GetJob", queue_pb2.GetJobRequest(
            job_id=job_id, without_payload=not with_payload))

    async def list_jobs(self, request: queue_pb2.ListJobsRequest) -> queue_pb2.ListJobsResponse:
        validate.list_jobs(request, self.limits)
        return await self._to_leader("ListJobs", request)

    async def cancel_jobs(self, selector: queue_pb2.JobSelector) -> queue_pb2.JobsAffected:
        validate.selector(selector, self.limits)
        return await self._to_leader("CancelJobs", queue_pb2.CancelJobsRequest(selector=selector))

    async def retry_jobs(self, selector: queue_pb2.JobSelector) -> queue_pb2.JobsAffected:
        validate.selector(selector, self.limits)
        return await self._to_leader("RetryJobs", queue_pb2.RetryJobsRequest(selector=selector))

    async def set_priority(self, selector: queue_pb2.JobSelector,
                           priority: int) -> queue_pb2.JobsAffected:
        validate.selector(selector, self.limits)
        validate.priority(priority)
        return await self._to_leader("SetPriority", queue_pb2.SetPriorityRequest(
            selector=selector, priority=priority))

    async def pause_queue(self, queue: str, duration_ms: int) -> queue_pb2.QueuePaused:
        validate.queue_name(queue, "queue", self.limits)
        validate.pause_duration(duration_ms, self.limits)
        return await self._to_leader("PauseQueue", queue_pb2.PauseQueueRequest(
            queue=queue, duration_ms=duration_ms))

    async def resume_queue(self, queue: str) -> queue_pb2.QueuePaused:
        validate.queue_name(queue, "queue", self.limits)
        return await self._to_leader("ResumeQueue", queue_pb2.ResumeQueueRequest(queue=queue))

    async def purge_queue(self, queue: str) -> queue_pb2.JobsAffected:
        validate.queue_name(queue, "queue", self.limits)
        return await self._to_leader("PurgeQueue", queue_pb2.PurgeQueueRequest(queue=queue))

    async def set_queue_config(self, change: queue_pb2.SetQueueConfigRequest,
                               ) -> queue_pb2.QueueConfig:
        validate.queue_config(change, self.limits)
        return await self._to_leader("SetQueueConfig", change)

    async def get_queue_config(self, queue: str) -> queue_pb2.QueueConfig:
        validate.queue_name(queue, "queue", self.limits)
        return await self._to_leader("GetQueueConfig",
                                     queue_pb2.GetQueueConfigRequest(queue=queue))

    async def explain_job(self, job_id: int) -> queue_pb2.ExplainJobResponse:
        validate.job_id(job_id)
        info = await self.get_job(job_id, with_payload=False)
        request = queue_pb2.ExplainJobRequest(job_id=job_id)
        owner = self.monitor.by_id(info.owner_node) if info.owner_node else None
        if owner is not None and owner.report is not None:
            try:
                return await self._forward([owner], "ExplainJob", request,
                                           timeout=FORWARD_TIMEOUT_S)
            except Unavailable:
                pass  # the owner is down: the leader's view, without its consumers
        return await self._to_leader("ExplainJob", request)

    async def _to_leader(self, method: str, request):
        leader = self.monitor.leader()
        others = [n for n in self.monitor.live() if n is not leader]
        return await self._forward(([leader] if leader else []) + others, method, request,
                                   timeout=FORWARD_TIMEOUT_S)

    async def _forward(self, nodes: list[NodeView], method: str, request, timeout: float):
        last = "no node is reachable"
        for node in nodes:
            try:
                return await getattr(node.queue, method)(request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise Forwarded(exc.code(), exc.details()) from exc
                last = f"{node.address}: {exc.details()}"
        raise Unavailable(f"{method} could not reach a node ({last})", None)
