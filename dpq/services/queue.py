"""The public ``dpq.v1.Queue`` service of a node: protobuf in, core calls, protobuf out.

Ack, Nack and ExtendLease answer per job (``RefResult``), as SQS's
DeleteMessageBatch does: a job whose lease was lost (or that is gone) is one
item refused with ``lease_lost`` (``not_found``), its ``reason`` enum beside the
string, and the other jobs of the request are still settled. The RPC itself
fails only for the request as a whole: INVALID_ARGUMENT for a bad field,
UNAVAILABLE when no leader commits it. FAILED_PRECONDITION is never used for
a lost lease (one lost job must not fail the rest of a batch).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import grpc

from dpq.queue.results import refusal_to_pb
from dpq.services.admission import AdmissionGate
from dpq.services.errors import abort_for, mapped
from dpq.v1 import queue_pb2, queue_pb2_grpc


class QueueOperations(Protocol):
    """What a node or a gateway does for each public RPC (plain Python)."""

    async def enqueue(self, jobs: Sequence[queue_pb2.NewJob]) -> list[int]: ...
    async def dequeue(self, request: queue_pb2.DequeueRequest) -> list[queue_pb2.Job]: ...
    # A Consume stream: requests in, pushes and settlement answers out; ends by raising.
    def consume(self, requests: AsyncIterator[queue_pb2.ConsumeRequest],
                ) -> AsyncIterator[queue_pb2.ConsumeResponse]: ...
    # Per reference "" (done) or why not: a dpq.queue.results.Refusal, or a node's string.
    async def ack(self, refs: Sequence[queue_pb2.JobRef]) -> list[str]: ...
    async def nack(self, refs: Sequence[queue_pb2.JobRef], delay_ms: int,
                   error: str = "") -> list[str]: ...
    async def extend(self, refs: Sequence[queue_pb2.JobRef], lease_ms: int) -> list[str]: ...
    async def stats(self, queue: str,
                    include_idle: bool = False) -> list[queue_pb2.QueueStats]: ...
    async def cluster_info(self) -> queue_pb2.ClusterInfoResponse: ...
    # Managing jobs (dpq.queue.inspect reads, one log command per change):
    async def get_job(self, job_id: int, with_payload: bool = True) -> queue_pb2.JobInfo: ...
    async def list_jobs(self, request: queue_pb2.ListJobsRequest,
                        ) -> queue_pb2.ListJobsResponse: ...
    async def cancel_jobs(self, selector: queue_pb2.JobSelector) -> queue_pb2.JobsAffected: ...
    async def retry_jobs(self, selector: queue_pb2.JobSelector) -> queue_pb2.JobsAffected: ...
    async def set_priority(self, selector: queue_pb2.JobSelector,
                           priority: int) -> queue_pb2.JobsAffected: ...
    async def pause_queue(self, queue: str, duration_ms: int) -> queue_pb2.QueuePaused: ...
    async def resume_queue(self, queue: str) -> queue_pb2.QueuePaused: ...
    async def purge_queue(self, queue: str) -> queue_pb2.JobsAffected: ...
    async def explain_job(self, job_id: int) -> queue_pb2.ExplainJobResponse: ...
    # Queue settings (one log command per change; reads from the replica asked):
    async def set_queue_config(self, change: queue_pb2.SetQueueConfigRequest,
                               ) -> queue_pb2.QueueConfig: ...
    async def get_queue_config(self, queue: str) -> queue_pb2.QueueConfig: ...
    # Periodic jobs (dpq.node.schedule_ops, dpq.gateway.schedule_ops):
    async def create_schedule(self, request: queue_pb2.CreateScheduleRequest,
                              ) -> queue_pb2.Schedule: ...
    async def delete_schedule(self, name: str) -> queue_pb2.ScheduleDeleted: ...
    async def list_schedules(self) -> queue_pb2.ListSchedulesResponse: ...


def _ref_response(refs, errors: list[str]) -> queue_pb2.RefResponse:
    return queue_pb2.RefResponse(results=[
        queue_pb2.RefResult(job_id=ref.job_id, ok=not error, error=str(error),
                            reason=refusal_to_pb(error))
        for ref, error in zip(refs, errors)
    ])


class QueueServicer(queue_pb2_grpc.QueueServicer):
    """``gate``: per-connection in-flight limits on Enqueue (``dpq.services.admission``)."""

    def __init__(self, ops: QueueOperations, gate: AdmissionGate | None = None) -> None:
        self._ops = ops
        self._gate = gate if gate is not None else AdmissionGate()

    @mapped
    async def Enqueue(self, request, context):
        async with self._gate.admit(context.peer(), len(request.jobs)):
            ids = await self._ops.enqueue(request.jobs)
        return queue_pb2.EnqueueResponse(job_ids=ids)

    async def EnqueueStream(self, request_iterator,
                            context) -> AsyncIterator[queue_pb2.EnqueueResponse]:
        client = context.peer()
        async for request in request_iterator:
            try:
                async with self._gate.admit(client, len(request.jobs)):
                    ids = await self._ops.enqueue(request.jobs)
            except Exception as exc:  # noqa: BLE001 - mapped to a status, ends the stream
                await abort_for(exc, context, "/dpq.v1.Queue/EnqueueStream")
            yield queue_pb2.EnqueueResponse(job_ids=ids)

    @mapped
    async def Dequeue(self, request, context):
        return queue_pb2.DequeueResponse(jobs=await self._ops.dequeue(request))

    async def Consume(self, request_iterator,
                      context) -> AsyncIterator[queue_pb2.ConsumeResponse]:
        consume = getattr(self._ops, "consume", None)
        if consume is None:  # operations that predate Consume: the client long-polls instead
            await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                "Consume is not served here: long-poll with Dequeue")
        try:
            async for response in consume(request_iterator):
                yield response
        except grpc.aio.AbortError:
            raise  # a request that did not decode: the status is set already
        except Exception as exc:  # noqa: BLE001 - mapped to a status, ends the stream
            await abort_for(exc, context, "/dpq.v1.Queue/Consume")

    @mapped
    async def Ack(self, request, context):
        return _ref_response(request.jobs, await self._ops.ack(request.jobs))

    @mapped
    async def Nack(self, request, context):
        return _ref_response(request.jobs, await self._ops.nack(request.jobs, request.delay_ms,
                                                                request.error))

    @mapped
    async def ExtendLease(self, request, context):
        return _ref_response(request.jobs, await self._ops.extend(request.jobs, request.lease_ms))

    @mapped
    async def Stats(self, request, context):
        return queue_pb2.StatsResponse(
            queues=await self._ops.stats(request.queue, request.include_idle))

    @mapped
    async def ClusterInfo(self, request, context):
        return await self._ops.cluster_info()

    # ------------------------------------------------------------ managing jobs

    @mapped
    async def GetJob(self, request, context):
        return await self._ops.get_job(request.job_id, not request.without_payload)

    @mapped
    async def ListJobs(self, request, context):
        return await self._ops.list_jobs(request)

    @mapped
    async def CancelJobs(self, request, context):
        return await self._ops.cancel_jobs(request.selector)

    @mapped
    async def RetryJobs(self, request, context):
        return await self._ops.retry_jobs(request.selector)

    @mapped
    async def SetPriority(self, request, context):
        return await self._ops.set_priority(request.selector, request.priority)

    @mapped
    async def PauseQueue(self, request, context):
        return await self._ops.pause_queue(request.queue, request.duration_ms)

    @mapped
    async def ResumeQueue(self, request, context):
        return await self._ops.resume_queue(request.queue)

    @mapped
    async def PurgeQueue(self, request, context):
        return await self._ops.purge_queue(request.queue)

    @mapped
    async def ExplainJob(self, request, context):
        return await self._ops.explain_job(request.job_id)

    @mapped
    async def SetQueueConfig(self, request, context):
        return await self._ops.set_queue_config(request)

    @mapped
    async def GetQueueConfig(self, request, context):
        return await self._ops.get_queue_config(request.queue)

    # ------------------------------------------------------------ periodic jobs

    @mapped
    async def CreateSchedule(self, request, context):
        return await self._ops.create_schedule(request)

    @mapped
    async def DeleteSchedule(self, request, context):
        return await self._ops.delete_schedule(request.name)

    @mapped
    async def ListSchedules(self, request, context):
        return await self._ops.list_schedules()
