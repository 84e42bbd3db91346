"""What a producer sends: :class:`JobSpec`, and its conversion to ``dpq.v1.NewJob``.

Only types are checked here (a payload must be bytes or str, a delay a
non-negative number of seconds or a ``timedelta``); the limits — priority
range, queue name characters, payload size — are the server's to enforce, and
its ``INVALID_ARGUMENT`` message names the field and the limit.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from dpq.v1 import queue_pb2

#: A job's payload: bytes as they are, or text (sent as UTF-8).
Payload = bytes | bytearray | memoryview | str
#: A delay before a job becomes ready: seconds, or a ``timedelta``; None is none.
Delay = float | int | timedelta | None

DEFAULT_PRIORITY = 3
DEFAULT_QUEUE = "default"
_MAX_DELAY_MS = 2**32 - 1  # NewJob.delay_ms is a uint32


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job to enqueue: the arguments of ``enqueue`` as a value.

    ``priority`` 1 is the most urgent, 5 the least. A ``dedup_key`` seen again
    in the same queue within the cluster's dedup window (an hour by default)
    returns the first job's id and enqueues nothing. ``fairness_key`` (a tenant, a
    customer) makes delivery within one priority take turns between keys by weight.
    """

    payload: Payload
    priority: int = DEFAULT_PRIORITY
    queue: str = DEFAULT_QUEUE
    delay: Delay = None
    dedup_key: str | None = None
    fairness_key: str | None = None


#: What ``enqueue_many`` takes per job: a :class:`JobSpec`, a bare payload
#: (default priority and queue), or a mapping with JobSpec's field names.
JobLike = JobSpec | Payload | Mapping[str, Any]


def as_spec(item: JobLike) -> JobSpec:
    """The :class:`JobSpec` an ``enqueue_many`` item stands for."""
    if isinstance(item, JobSpec):
        return item
    if isinstance(item, (bytes, bytearray, memoryview, str)):
        return JobSpec(item)
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - set(JobSpec.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown job field(s) {unknown}; a job has "
                            f"{sorted(JobSpec.__dataclass_fields__)}")
        return JobSpec(**item)
    raise TypeError(f"a job is a JobSpec, bytes, str or a mapping, not {type(item).__name__}")


def payload_bytes(payload: Payload) -> bytes:
    """The bytes sent for a payload (str as UTF-8)."""
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"payload must be bytes or str, not {type(payload).__name__}")


def delay_ms(delay: Delay) -> int:
    """A delay in whole milliseconds, rounded up (a job is never early)."""
    if delay is None:
        return 0
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"delay must be seconds or a timedelta, not {type(delay).__name__}")
    if not seconds >= 0:
        raise ValueError(f"delay must not be negative (got {delay!r})")
    ms = math.ceil(seconds * 1000)
    if ms > _MAX_DELAY_MS:
        raise ValueError(f"delay of {seconds}s is too long for the protocol (at most "
                         f"{_MAX_DELAY_MS // 1000}s; the server's limit is lower)")
    return ms


def to_new_job(spec: JobSpec, idempotent: bool = False) -> queue_pb2.NewJob:
    """The ``NewJob`` for ``spec``; ``idempotent`` fills a random dedup key if none is set."""
    if isinstance(spec.priority, bool) or not isinstance(spec.priority, int):
        raise TypeError(f"priority must be an int (1 = most urgent … 5), not {spec.priority!r}")
    if not -(2**31) <= spec.priority < 2**31:
        raise ValueError(f"priority {spec.priority} is outside 1..5 (1 is the most urgent)")
    if not isinstance(spec.queue, str):
        raise TypeError(f"queue must be a str, not {type(spec.queue).__name__}")
    dedup = spec.dedup_key
    if dedup is None and idempotent:
        dedup = f"auto:{uuid.uuid4().hex}"
    return queue_pb2.NewJob(
        queue=spec.queue,
        priority=spec.priority,
        payload=payload_bytes(spec.payload),
        delay_ms=delay_ms(spec.delay),
        dedup_key=dedup or "",
        fairness_key=spec.fairness_key or "",
    )
