"""Which jobs a bulk action applies to: a ``JobSelector`` resolved against the state.

Every replica resolves the selector of a committed Cancel, Retry or SetPriority
command against the same state at the same leader time, so every replica picks
the same jobs. Fields combine with AND; an empty field matches anything. The
public state a job is in at a time (``READY`` or ``DELAYED`` for a job the
state machine holds as READY) is :func:`public_state`.

Pure: no I/O, no clock (the caller passes the time).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from dpq.queue.jobs import Job, JobState
from dpq.v1 import queue_pb2

READY = queue_pb2.READY
DELAYED = queue_pb2.DELAYED
LEASED = queue_pb2.LEASED
DEAD = queue_pb2.DEAD
DONE = queue_pb2.DONE
CANCELLED = queue_pb2.CANCELLED
ANY = queue_pb2.JOB_STATE_UNSPECIFIED


def public_state(job: Job, now_us: int) -> int:
    """The ``dpq.v1.JobState`` of a job the state machine holds, at ``now_us``."""
    state = job.state
    if state == JobState.READY:
        return DELAYED if job.ready_at_us > now_us else READY
    return _PUBLIC[state]


def selects_everything(selector: queue_pb2.JobSelector) -> bool:
    """True when no field narrows the selection (only ``all`` may then be set)."""
    return not (selector.job_ids or selector.queue or selector.state or selector.priority
                or selector.dedup_key_prefix)


def select(jobs: Mapping[int, Job], selector: queue_pb2.JobSelector, now_us: int) -> list[Job]:
    """The jobs ``selector`` picks, in job id order (a list: the caller changes them)."""
    if selector.job_ids:
        candidates: Iterator[Job] = (jobs[i] for i in sorted(set(selector.job_ids)) if i in jobs)
    else:
        candidates = (jobs[i] for i in sorted(jobs))
    queue = selector.queue
    wanted = selector.state
    priority = selector.priority
    prefix = selector.dedup_key_prefix
    return [job for job in candidates
            if (not queue or job.queue == queue)
            and (not priority or job.priority == priority)
            and (not prefix or job.dedup_key.startswith(prefix))
            and (not wanted or public_state(job, now_us) == wanted)]


_PUBLIC = {JobState.LEASED: LEASED, JobState.DEAD: DEAD, JobState.CANCELLED: CANCELLED,
           JobState.GONE: DONE}
