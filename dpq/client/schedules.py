"""Periodic jobs from the admin clients: ``create_schedule``, ``delete_schedule`` and
``list_schedules`` of :class:`~dpq.client.AsyncAdmin` and :class:`~dpq.client.Admin`.

::

    with Admin("127.0.0.1:7100") as admin:
        admin.create_schedule("nightly-report", "reports", cron="0 3 * * *", payload=b"{}")
        admin.create_schedule("heartbeat", "pings", every=30, jitter=5)  # seconds
        for s in admin.list_schedules():
            print(s.name, s.next_fire_at, s.fired)
        admin.delete_schedule("heartbeat")

Each tick enqueues exactly one job, cluster-wide, also across leader changes and
restarts. Ticks missed for up to 5 s (a leader change) all run, late; after a
longer gap (the whole cluster was down) one catch-up job runs, not a burst. Cron
expressions have 5 fields and are read in UTC.

A create whose answer was lost and that is retried answers
:class:`~dpq.client.errors.AlreadyExistsError` (the first try made it):
``replace=True`` makes the call idempotent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from dpq.v1 import queue_pb2

if TYPE_CHECKING:
    from dpq.client.admin import Admin, AsyncAdmin


def _time(us: int) -> datetime | None:
    return datetime.fromtimestamp(us / 1e6, tz=UTC) if us else None


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as the cluster holds it (``dpq.v1.Schedule``). Exactly one of ``cron``
    and ``every`` (seconds) is set. ``next_fire_at`` is None when no tick is left;
    ``version`` is the log slot that created it."""

    name: str
    queue: str
    priority: int
    payload: bytes
    cron: str | None
    every: float | None
    start_at: datetime | None
    jitter: float
    fairness_key: str
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    fired: int
    last_job_id: int
    created_at: datetime | None
    version: int

    @classmethod
    def from_pb(cls, pb: queue_pb2.Schedule) -> ScheduleInfo:
        return cls(name=pb.name, queue=pb.queue, priority=pb.priority, payload=bytes(pb.payload),
                   cron=pb.cron or None, every=pb.every_ms / 1000 if pb.every_ms else None,
                   start_at=_time(pb.start_at), jitter=pb.jitter_ms / 1000,
                   fairness_key=pb.fairness_key, next_fire_at=_time(pb.next_fire_at_us),
                   last_fire_at=_time(pb.last_fire_at_us), fired=pb.fired,
                   last_job_id=pb.last_job_id, created_at=_time(pb.created_at_us),
                   version=pb.version)


@dataclass(frozen=True, slots=True)
class ScheduleDeletion:
    """What ``delete_schedule`` did: ``existed`` (False: there was no such schedule);
    ``slot``: the log slot of the command."""

    name: str
    existed: bool
    slot: int


def _ms(name: str, value: float | timedelta | None) -> int:
    if value is None:
        return 0
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be seconds or a timedelta, not {type(value).__name__}")
    if seconds < 0:
        raise ValueError(f"{name} must not be negative (got {value!r})")
    return math.ceil(seconds * 1000)


def _us(start_at: datetime | float | None) -> int:
    """``start_at`` (an aware datetime, or seconds since the epoch; None: now) → µs."""
    if start_at is None:
        return 0
    if isinstance(start_at, datetime):
        if start_at.tzinfo is None:
            raise ValueError("start_at must be timezone-aware (e.g. datetime.now(UTC))")
        return (start_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    if isinstance(start_at, bool) or not isinstance(start_at, (int, float)):
        raise TypeError(f"start_at must be a datetime or epoch seconds, not {start_at!r}")
    return round(start_at * 1e6)


def schedule_pb(name: str, queue: str, *, every: float | timedelta | None = None,
                cron: str | None = None, priority: int = 0, payload: bytes = b"",
                start_at: datetime | float | None = None,
                jitter: float | timedelta | None = None,
                fairness_key: str = "") -> queue_pb2.Schedule:
    """The ``dpq.v1.Schedule`` to create (types are checked here, limits by the server)."""
    if (every is None) == (cron is None):
        raise TypeError("give exactly one of every= (seconds or a timedelta) and cron=")
    if not isinstance(payload, bytes):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    return queue_pb2.Schedule(name=name, queue=queue, priority=priority, payload=payload,
                              cron=cron or "", every_ms=_ms("every", every),
                              start_at=_us(start_at), jitter_ms=_ms("jitter", jitter),
                              fairness_key=fairness_key)


class AsyncSchedules:
    """The schedule methods of :class:`~dpq.client.AsyncAdmin` (see the module)."""

    async def create_schedule(self: AsyncAdmin, name: str, queue: str, *,
                              every: float | timedelta | None = None, cron: str | None = None,
                              priority: int = 0, payload: bytes = b"",
                              start_at: datetime | float | None = None,
                              jitter: float | timedelta | None = None, fairness_key: str = "",
                              replace: bool = False) -> ScheduleInfo:
        """Enqueue a job into ``queue`` every ``every`` seconds or on ``cron`` (5 fields,
        UTC), from ``start_at`` (None: now), each tick later by a fixed pseudo-random
        0..``jitter`` seconds. ``priority`` 0: 3. Raises
        :class:`~dpq.client.errors.AlreadyExistsError` if ``name`` exists, unless
        ``replace``."""
        request = queue_pb2.CreateScheduleRequest(schedule=schedule_pb(
            name, queue, every=every, cron=cron, priority=priority, payload=payload,
            start_at=start_at, jitter=jitter, fairness_key=fairness_key), replace=replace)
        pb = await self._call("CreateSchedule", lambda s: s.CreateSchedule, request)
        return ScheduleInfo.from_pb(pb)

    async def delete_schedule(self: AsyncAdmin, name: str) -> ScheduleDeletion:
        """Delete schedule ``name``: no tick of it enqueues anything from then on."""
        request = queue_pb2.DeleteScheduleRequest(name=name)
        pb = await self._call("DeleteSchedule", lambda s: s.DeleteSchedule, request)
        return ScheduleDeletion(pb.name, pb.existed, pb.slot)

    async def list_schedules(self: AsyncAdmin) -> list[ScheduleInfo]:
        """Every schedule, by name."""
        pb = await self._call("ListSchedules", lambda s: s.ListSchedules,
                              queue_pb2.ListSchedulesRequest())
        return [ScheduleInfo.from_pb(s) for s in pb.schedules]


class Schedules:
    """The schedule methods of :class:`~dpq.client.Admin` (blocking)."""

    def create_schedule(self: Admin, name: str, queue: str, *,
                        every: float | timedelta | None = None, cron: str | None = None,
                        priority: int = 0, payload: bytes = b"",
                        start_at: datetime | float | None = None,
                        jitter: float | timedelta | None = None, fairness_key: str = "",
                        replace: bool = False) -> ScheduleInfo:
        """See :meth:`AsyncSchedules.create_schedule`."""
        return self._loop.run(self._async.create_schedule(
            name, queue, every=every, cron=cron, priority=priority, payload=payload,
            start_at=start_at, jitter=jitter, fairness_key=fairness_key, replace=replace))

    def delete_schedule(self: Admin, name: str) -> ScheduleDeletion:
        """See :meth:`AsyncSchedules.delete_schedule`."""
        return self._loop.run(self._async.delete_schedule(name))

    def list_schedules(self: Admin) -> list[ScheduleInfo]:
        """See :meth:`AsyncSchedules.list_schedules`."""
        return self._loop.run(self._async.list_schedules())
