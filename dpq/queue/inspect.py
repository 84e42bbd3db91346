"""What an operator reads about jobs: GetJob, ListJobs and ExplainJob, from one replica.

Every figure comes from the replica's state as of its last applied slot
(``QueueState.applied_slot``); times are the caller's wall clock. Ready jobs
are ordered as a node's heap orders them: by the aged key ``ready_at + (priority
- 1) × aging_step`` (by priority, then ready time, when the step is 0), the job
id breaking ties where the heap uses arrival order.

Pure: no I/O; scans are O(jobs), which is fine for an operator's request and is
why none of this runs on the delivery path.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from dpq.queue import selector
from dpq.queue.jobs import Job, JobState
from dpq.queue.state import QueueState
from dpq.queue.validate import InvalidArgument
from dpq.v1 import queue_pb2

DEFAULT_LIMIT = 100
_READY_GROUP, _OTHER_GROUP = 0, 1


def sort_key(job: Job, aging_step_us: int) -> tuple[int, int, int]:
    """Where a READY job stands in delivery order (lower first)."""
    ready_at = max(job.created_at_us, job.ready_at_us)
    if aging_step_us == 0:
        return (job.priority, ready_at, job.job_id)
    return (ready_at + (job.priority - 1) * aging_step_us, 0, job.job_id)


def aged_key_us(job: Job, aging_step_us: int) -> int:
    return max(job.created_at_us, job.ready_at_us) + (job.priority - 1) * aging_step_us


def job_info(state: QueueState, job_id: int, now_us: int, aging_step_us: int,
             with_payload: bool = True) -> queue_pb2.JobInfo | None:
    """The job as this replica knows it; None if it never saw it (or forgot its end)."""
    job = state.jobs.get(job_id)
    if job is None:
        ended = state.finished.get(job_id)
        if ended is None:
            return None
        how, at_us = ended
        return queue_pb2.JobInfo(
            job_id=job_id, finished_at_us=at_us,
            state=queue_pb2.DONE if how == JobState.GONE else queue_pb2.CANCELLED)
    info = queue_pb2.JobInfo(
        job_id=job.job_id, queue=job.queue, priority=job.priority,
        payload_bytes=len(job.payload), created_at_us=job.created_at_us,
        state=selector.public_state(job, now_us), attempt=job.attempt, owner_node=job.owner,
        ready_at_us=max(job.created_at_us, job.ready_at_us),
        aged_key_us=aged_key_us(job, aging_step_us), last_error=job.last_error,
        dedup_key=job.dedup_key, cancel_requested=job.cancel_requested,
        fairness_key=job.fairness_key)
    if with_payload:
        info.payload = job.payload
    if job.state == JobState.LEASED:
        info.lease_expires_at_us = job.lease_expires_at_us
        info.consumer_id = job.consumer_id
    if job.state == JobState.CANCELLED:
        ended = state.finished.get(job_id)
        info.finished_at_us = ended[1] if ended else 0
    return info


def list_jobs(state: QueueState, request: queue_pb2.ListJobsRequest, limit: int, now_us: int,
              aging_step_us: int) -> queue_pb2.ListJobsResponse:
    """One page: READY and DELAYED jobs in delivery order, then the others by job id.

    The page token is where the previous page stopped (its last job's place), so a
    page is right even when jobs came and went in between: none is listed twice.
    """
    after = _parse_token(request.page_token)
    wanted = request.state

    def place(job: Job) -> tuple[int, int, int, int]:
        if job.state == JobState.READY:
            return (_READY_GROUP, *sort_key(job, aging_step_us))
        return (_OTHER_GROUP, job.job_id, 0, 0)

    matches: Callable[[Job], bool] = lambda job: (
        (not request.queue or job.queue == request.queue)
        and (not request.priority or job.priority == request.priority)
        and (not wanted or selector.public_state(job, now_us) == wanted))
    candidates = ((place(job), job) for job in state.jobs.values() if matches(job))
    if after is not None:
        candidates = (c for c in candidates if c[0] > after)
    page = heapq.nsmallest(limit + 1, candidates, key=lambda c: c[0])
    more = len(page) > limit
    page = page[:limit]
    response = queue_pb2.ListJobsResponse(jobs=[
        job_info(state, job.job_id, now_us, aging_step_us, request.with_payload)
        for _, job in page])
    if more:
        response.next_page_token = ".".join(str(v) for v in page[-1][0])
    return response


def _parse_token(token: str) -> tuple[int, ...] | None:
    if not token:
        return None
    try:
        values = tuple(int(v) for v in token.split("."))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise InvalidArgument(f"page_token: {token[:64]!r} is not a token this node "
                              "handed out; pass next_page_token unchanged")
    return values


def explain(state: QueueState, job_id: int, now_us: int, aging_step_us: int, *,
            node_id: int, waiting_consumers: int | None) -> queue_pb2.ExplainJobResponse | None:
    """Why the job is not delivered yet, and when it should be.

    ``waiting_consumers``: consumers waiting on this node for the job's queue,
    or None when this node does not own the job (then it cannot know them).
    """
    info = job_info(state, job_id, now_us, aging_step_us, with_payload=False)
    if info is None:
        return None
    out = queue_pb2.ExplainJobResponse(job=info, answered_by=node_id,
                                       as_of_slot=state.applied_slot)
    job = state.jobs.get(job_id)
    hold = _holds(out)
    if job is None:
        hold(queue_pb2.HOLD_DONE if info.state == queue_pb2.DONE else queue_pb2.HOLD_CANCELLED,
             "it has left the queue" + (" (acked)" if info.state == queue_pb2.DONE else
                                        " (cancelled or purged)"))
        return out
    drain = state.drain.get(job.queue)
    rate = drain.per_second(now_us) if drain is not None else 0.0
    out.drain_rate_per_s = rate
    if waiting_consumers is not None:
        out.consumers_known = True
        out.waiting_consumers = waiting_consumers
    if job.state == JobState.LEASED:
        hold(queue_pb2.HOLD_LEASED, f"consumer {job.consumer_id!r} holds it until "
                                    f"{job.lease_expires_at_us} us (attempt {job.attempt})")
        return out
    if job.state == JobState.DEAD:
        hold(queue_pb2.HOLD_DEAD, f"it was delivered {job.attempt} times without an ack "
                                  f"(last error: {job.last_error or 'none'}); RetryJobs "
                                  "brings it back")
        return out
    if job.state == JobState.CANCELLED:
        hold(queue_pb2.HOLD_CANCELLED, "it was cancelled; RetryJobs brings it back")
        return out
    mine = sort_key(job, aging_step_us)
    on_node = in_cluster = 0
    for other in state.jobs.values():
        if (other.state == JobState.READY and other.queue == job.queue
                and other.job_id != job_id and sort_key(other, aging_step_us) < mine):
            in_cluster += 1
            if other.owner == job.owner:
                on_node += 1
    out.ahead_on_node, out.ahead_in_cluster = on_node, in_cluster
    due = info.ready_at_us
    if due > now_us:
        hold(queue_pb2.HOLD_DELAYED, f"its delay ends in {(due - now_us) / 1e6:.1f} s")
    paused = state.is_paused(job.queue, now_us)
    if paused:
        until = state.paused[job.queue]
        hold(queue_pb2.HOLD_PAUSED, f"queue {job.queue!r} is paused " + (
            "until resumed" if until == 0 else f"for {(until - now_us) / 1e6:.1f} s more"))
    limit = state.configs.get(job.queue)
    if limit is not None and limit.limited:
        counts = state.counts.get(job.queue)
        leased = counts.leased if counts is not None else 0
        if limit.max_in_flight and leased >= limit.max_in_flight:
            hold(queue_pb2.HOLD_IN_FLIGHT_LIMIT,
                 f"queue {job.queue!r} has {leased} jobs leased, its max_in_flight is "
                 f"{limit.max_in_flight}")
        if limit.rate_mjps and limit.next_token_us(now_us) > now_us:
            hold(queue_pb2.HOLD_RATE_LIMIT,
                 f"queue {job.queue!r} delivers at most {limit.rate_mjps / 1000:g} jobs/s; the "
                 f"next may go in {(limit.next_token_us(now_us) - now_us) / 1e6:.3f} s")
    if on_node:
        one = on_node == 1
        hold(queue_pb2.HOLD_PRIORITY_AHEAD,
             f"{on_node} ready {'job' if one else 'jobs'} of its node ({in_cluster} in the "
             f"cluster) {'goes' if one else 'go'} first")
    if waiting_consumers == 0:
        hold(queue_pb2.HOLD_NO_CONSUMERS,
             f"no consumer of {job.queue!r} is waiting on node {job.owner}")
    if not paused and rate > 0:
        out.estimated_start_us = max(due, now_us + int(in_cluster / rate * 1e6))
    elif not paused and in_cluster == 0 and due > now_us:
        out.estimated_start_us = due
    return out


def _holds(out: queue_pb2.ExplainJobResponse) -> Callable[[int, str], None]:
    def hold(what: int, why: str) -> None:
        out.holds.append(what)
        out.reasons.append(why)
    return hold
