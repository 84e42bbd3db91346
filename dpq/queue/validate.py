"""Checks on client input, done at the edge before anything is proposed.

Each check raises :class:`InvalidArgument` with a message that names the
field, the value and the limit, so a person can fix the call. A batch is
checked whole before anything of it is used: one bad job refuses the batch.
The servicers turn the exception into gRPC ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dpq.heap import PRIORITY_MAX, PRIORITY_MIN

QUEUE_NAME_CHARS = "letters, digits and _ . : -"
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")
DEFAULT_QUEUE = "default"


class InvalidArgument(ValueError):
    """Client input that breaks a documented limit."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits a node enforces (node flags set the non-default ones)."""

    max_payload_bytes: int = 1 << 20
    max_queue_name: int = 128
    max_dedup_key: int = 256
    max_consumer_id: int = 256
    max_batch_jobs: int = 10_000
    max_delay_ms: int = 30 * 24 * 3600 * 1000  # 30 days
    max_dequeue_jobs: int = 1000
    max_wait_ms: int = 60_000
    max_lease_ms: int = 12 * 3600 * 1000  # 12 hours, as SQS's visibility timeout
    max_refs: int = 10_000


DEFAULT_LIMITS = Limits()


def queue_name(name: str, field: str = "queue", limits: Limits = DEFAULT_LIMITS) -> str:
    """The queue a request names; the empty name is the default queue."""
    if not name:
        return DEFAULT_QUEUE
    if len(name) > limits.max_queue_name:
        raise InvalidArgument(
            f"{field}: a name of {len(name)} characters is over the limit of {limits.max_queue_name}"
        )
    if not _QUEUE_NAME.fullmatch(name):
        raise InvalidArgument(f"{field}: {name!r} has characters outside {QUEUE_NAME_CHARS}")
    return name


def _at_most(field: str, value: int, limit: int, unit: str = "") -> None:
    if value > limit:
        raise InvalidArgument(f"{field}: {value}{unit} is over the limit of {limit}{unit}")


def new_jobs(jobs: Sequence, limits: Limits = DEFAULT_LIMITS) -> None:
    """Check an Enqueue batch (``dpq.v1.NewJob`` messages)."""
    if not jobs:
        raise InvalidArgument("jobs: the batch is empty; send at least one job")
    _at_most("jobs", len(jobs), limits.max_batch_jobs, " jobs")
    for i, job in enumerate(jobs):
        where = f"jobs[{i}]"
        if not PRIORITY_MIN <= job.priority <= PRIORITY_MAX:
            raise InvalidArgument(
                f"{where}.priority: {job.priority} is outside {PRIORITY_MIN}..{PRIORITY_MAX} "
                f"(1 is the most urgent)"
            )
        queue_name(job.queue, f"{where}.queue", limits)
        _at_most(f"{where}.payload", len(job.payload), limits.max_payload_bytes, " bytes")
        _at_most(f"{where}.delay_ms", job.delay_ms, limits.max_delay_ms, " ms")
        _at_most(f"{where}.dedup_key", len(job.dedup_key), limits.max_dedup_key, " characters")


def dequeue(request, limits: Limits = DEFAULT_LIMITS) -> str:
    """Check a Dequeue request; return its queue name."""
    queue = queue_name(request.queue, "queue", limits)
    if request.max_jobs == 0:
        raise InvalidArgument(f"max_jobs: 0 is below the minimum of 1 (at most {limits.max_dequeue_jobs})")
    _at_most("max_jobs", request.max_jobs, limits.max_dequeue_jobs)
    if request.lease_ms == 0:
        raise InvalidArgument(f"lease_ms: 0 is below the minimum of 1 ms (at most {limits.max_lease_ms} ms)")
    _at_most("lease_ms", request.lease_ms, limits.max_lease_ms, " ms")
    _at_most("wait_ms", request.wait_ms, limits.max_wait_ms, " ms")
    _at_most("consumer_id", len(request.consumer_id), limits.max_consumer_id, " characters")
    return queue


def refs(jobs: Sequence, limits: Limits = DEFAULT_LIMITS) -> None:
    """Check the lease tokens of an Ack, Nack or ExtendLease."""
    if not jobs:
        raise InvalidArgument("jobs: no job references; send at least one")
    _at_most("jobs", len(jobs), limits.max_refs, " references")
    for i, ref in enumerate(jobs):
        if ref.job_id == 0:
            raise InvalidArgument(f"jobs[{i}].job_id: 0 is not a job id (ids start at 1)")
        if ref.attempt == 0:
            raise InvalidArgument(
                f"jobs[{i}].attempt: 0 is not a lease; quote the attempt the job was delivered with"
            )


def nack_delay(delay_ms: int, limits: Limits = DEFAULT_LIMITS) -> None:
    _at_most("delay_ms", delay_ms, limits.max_delay_ms, " ms")


def lease(lease_ms: int, limits: Limits = DEFAULT_LIMITS) -> None:
    if lease_ms == 0:
        raise InvalidArgument(f"lease_ms: 0 is below the minimum of 1 ms (at most {limits.max_lease_ms} ms)")
    _at_most("lease_ms", lease_ms, limits.max_lease_ms, " ms")
