"""Periodic jobs in the replicated state: the schedules table and its three commands.

A schedule (``dpq.v1.Schedule``) names a queue, a priority, a payload and when to
fire: a five-field cron expression (UTC) or ``every_ms``, from ``start_at`` (0: the
leader time of the slot that created it), each tick moved later by a stable
pseudo-random 0..``jitter_ms`` (``dpq.queue.timetable``).

Exactly one job per tick, cluster-wide. The leader's ticker (``dpq.node.ticker``)
proposes ``ScheduleTick(name, fire_at_us, version, owner)`` once its clock passes a
schedule's next fire time; every replica applies it the same way:

* it enqueues exactly one job — through the Enqueue path, a real job owned by
  ``owner``, counted and told to the observer — iff ``version`` is the schedule's
  (the slot that created it), ``fire_at_us`` is its ``next_fire_at_us``, and the
  slot's leader time is at or past ``fire_at_us``;
* otherwise it is dropped (a :class:`Ticked` with ``dropped`` saying why) and
  nothing changes: a tick proposed twice (two leaders around a failover, a retry)
  enqueues once, a tick of a deleted or replaced schedule never.

After a tick the next fire time is the next occurrence after the nominal one. If
that is more than :data:`CATCH_UP_GRACE_US` behind the leader time, the schedule
skips to the first occurrence after the leader time instead: ticks missed during
a short leader change all run (late), but after the whole cluster was down only
the one overdue tick runs — one catch-up job, not a burst.

:class:`ScheduleCommands` is a part of :class:`~dpq.queue.state.QueueState` (like
``dpq.queue.operators``); the table is :class:`ScheduleTable`, ``state.schedules``.
Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import base64
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from dpq.queue import rules, timetable
from dpq.queue.results import Enqueued, Refusal, Refused
from dpq.queue.timetable import NEVER
from dpq.v1 import log_pb2, queue_pb2

if TYPE_CHECKING:
    from dpq.queue.state import QueueState

#: How far behind the leader time a schedule's next tick may fall and still run
#: (late); past it the schedule skips to its first occurrence after the leader time.
#: Longer than a leader change (a few election timeouts), far shorter than a restart.
CATCH_UP_GRACE_US = 5_000_000
#: Schedules the cluster holds at most (each costs memory on every replica).
MAX_SCHEDULES = 10_000
MAX_NAME_BYTES = rules.MAX_SCHEDULE_NAME_BYTES
#: The priority of a schedule that gives none (0).
DEFAULT_PRIORITY = 3
#: What a schedule costs in memory besides its strings and payload (measured roughly:
#: the dataclass, its dict slot, a heap entry).
SCHEDULE_OVERHEAD = 512


@dataclass(slots=True)
class Schedule:
    """One schedule as every replica holds it."""

    name: str
    queue: str
    priority: int
    payload: bytes
    cron: str
    every_ms: int
    start_at_us: int  # the first occurrence counts from here (0 given: the creating slot's time)
    jitter_ms: int
    fairness_key: str
    version: int  # the slot that created it
    created_at_us: int
    origin_us: int  # the first occurrence: a period's grid
    next_nominal_us: int  # the next tick before jitter (NEVER: no tick left)
    next_fire_at_us: int  # ... and after it
    last_fire_at_us: int = 0
    fired: int = 0
    last_job_id: int = 0

    @property
    def cost(self) -> int:
        return (SCHEDULE_OVERHEAD + len(self.name) + len(self.queue) + len(self.payload)
                + len(self.cron) + len(self.fairness_key))

    def to_pb(self) -> queue_pb2.Schedule:
        return queue_pb2.Schedule(
            name=self.name, queue=self.queue, priority=self.priority, payload=self.payload,
            cron=self.cron, every_ms=self.every_ms, start_at=self.start_at_us,
            jitter_ms=self.jitter_ms, fairness_key=self.fairness_key,
            next_fire_at_us=self.next_fire_at_us, last_fire_at_us=self.last_fire_at_us,
            fired=self.fired, last_job_id=self.last_job_id, created_at_us=self.created_at_us,
            version=self.version)

    def to_json(self) -> list:
        return [self.name, self.queue, self.priority, base64.b64encode(self.payload).decode(),
                self.cron, self.every_ms, self.start_at_us, self.jitter_ms, self.fairness_key,
                self.version, self.created_at_us, self.origin_us, self.next_nominal_us,
                self.next_fire_at_us, self.last_fire_at_us, self.fired, self.last_job_id]

    @classmethod
    def from_json(cls, row: list) -> Schedule:
        """The schedule of a ``to_json`` row; ValueError for anything else."""
        name, queue, priority, payload, cron, every_ms, start_at, jitter, key, *counts = row
        numbers = [priority, every_ms, start_at, jitter, *counts]
        if len(counts) != 8 or not all(type(n) is int and 0 <= n < 2**63 for n in numbers):
            raise ValueError(f"schedule {name!r}: bad numbers {numbers!r}")
        if not all(type(t) is str for t in (name, queue, payload, cron, key)):
            raise ValueError(f"schedule {name!r}: a text field is not text")
        return cls(name, queue, priority, base64.b64decode(payload, validate=True), cron,
                   every_ms, start_at, jitter, key, *counts)


# ------------------------------------------------------------------- results

class ScheduleSet(NamedTuple):
    """CreateSchedule: ``changed`` (created, or replaced when ``existed``); an existing
    schedule not replaced keeps its ``version`` and nothing changed."""

    name: str
    version: int
    existed: bool
    changed: bool
    next_fire_at_us: int


class ScheduleRemoved(NamedTuple):
    name: str
    existed: bool


class Ticked(NamedTuple):
    """ScheduleTick: the job enqueued, or ``job_id`` 0 and why the tick was dropped."""

    name: str
    job_id: int
    next_fire_at_us: int
    dropped: str = ""


# --------------------------------------------------------------------- table

class ScheduleTable:
    """name -> :class:`Schedule`, and a heap of next fire times for the ticker."""

    def __init__(self) -> None:
        self.entries: dict[str, Schedule] = {}
        #: Moves on every change: the ticker looks again when it moved.
        self.revision = 0
        #: The last slot that created, replaced or deleted a schedule (for the writer).
        self.defined_slot = 0
        # (next_fire_at_us, name, version); stale rows are skipped and dropped
        self._heap: list[tuple[int, str, int]] = []

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Schedule]:
        return iter(self.entries.values())

    def get(self, name: str) -> Schedule | None:
        return self.entries.get(name)

    def put(self, entry: Schedule) -> None:
        self.entries[entry.name] = entry
        self.changed(entry)

    def remove(self, name: str) -> Schedule | None:
        self.revision += 1
        return self.entries.pop(name, None)

    def changed(self, entry: Schedule) -> None:
        self.revision += 1
        if entry.next_fire_at_us != NEVER:
            heapq.heappush(self._heap, (entry.next_fire_at_us, entry.name, entry.version))
        if len(self._heap) > 2 * len(self.entries) + 64:
            self._heap = [(e.next_fire_at_us, e.name, e.version) for e in self.entries.values()
                          if e.next_fire_at_us != NEVER]
            heapq.heapify(self._heap)

    def _current(self, row: tuple[int, str, int]) -> bool:
        entry = self.entries.get(row[1])
        return entry is not None and entry.version == row[2] and entry.next_fire_at_us == row[0]

    def earliest(self) -> int | None:
        """The next fire time of any schedule (None: none will fire)."""
        heap = self._heap
        while heap and not self._current(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, now_us: int) -> list[Schedule]:
        """The schedules whose next tick is at or before ``now_us``, soonest first."""
        heap, out, keep = self._heap, [], []
        while heap and heap[0][0] <= now_us:
            row = heapq.heappop(heap)
            if self._current(row):
                out.append(self.entries[row[1]])
                keep.append(row)
        for row in keep:
            heapq.heappush(heap, row)
        return out

    def to_json(self) -> list:
        return [self.entries[name].to_json() for name in sorted(self.entries)]


# ------------------------------------------------------------------ commands

def _first_tick(entry: Schedule, now_us: int) -> None:
    """Set the first tick of a new schedule: its first occurrence at or after its start,
    or (a start long past) the first one after now."""
    nominal = timetable.first_at_or_after(entry.cron, entry.every_ms, entry.start_at_us)
    entry.origin_us = nominal if nominal != NEVER else entry.start_at_us
    _set_next(entry, nominal, now_us)


def _set_next(entry: Schedule, nominal: int, now_us: int) -> None:
    fire = nominal + timetable.jitter_us(entry.name, nominal, entry.jitter_ms)
    if nominal != NEVER and fire + CATCH_UP_GRACE_US < now_us:
        # too late to run each missed tick: the one just run (if any) was the catch-up
        nominal = timetable.next_after(entry.cron, entry.every_ms, entry.origin_us, now_us)
        fire = nominal + timetable.jitter_us(entry.name, nominal, entry.jitter_ms)
    if nominal == NEVER:
        fire = NEVER
    entry.next_nominal_us, entry.next_fire_at_us = nominal, fire


class ScheduleCommands:
    """CreateSchedule, DeleteSchedule and ScheduleTick of :class:`QueueState` (see the
    module). The state holds ``schedules`` (a :class:`ScheduleTable`)."""

    def _create_schedule(self: QueueState,
                         cmd: log_pb2.CreateScheduleCommand) -> ScheduleSet | Refused:
        spec = cmd.schedule
        table = self.schedules
        old = table.get(spec.name)
        if old is not None and not cmd.replace:
            return ScheduleSet(old.name, old.version, True, False, old.next_fire_at_us)
        if old is None and len(table) >= MAX_SCHEDULES:
            return rules.reason(Refusal.INVALID, f"{MAX_SCHEDULES} schedules exist already: "
                                                 "delete some first")
        now = self.clock_us
        entry = Schedule(
            name=spec.name, queue=spec.queue or rules.DEFAULT_QUEUE,
            priority=spec.priority or DEFAULT_PRIORITY, payload=bytes(spec.payload),
            cron=spec.cron.strip(), every_ms=spec.every_ms,
            start_at_us=spec.start_at or now, jitter_ms=spec.jitter_ms,
            fairness_key=spec.fairness_key, version=self.applied_slot, created_at_us=now,
            origin_us=0, next_nominal_us=NEVER, next_fire_at_us=NEVER)
        _first_tick(entry, now)
        if old is not None:
            self.held_bytes -= old.cost
        self.held_bytes += entry.cost
        table.put(entry)
        table.defined_slot = self.applied_slot
        return ScheduleSet(entry.name, entry.version, old is not None, True,
                           entry.next_fire_at_us)

    def _delete_schedule(self: QueueState,
                         cmd: log_pb2.DeleteScheduleCommand) -> ScheduleRemoved:
        old = self.schedules.remove(cmd.name)
        if old is not None:
            self.held_bytes -= old.cost
            self.schedules.defined_slot = self.applied_slot
        return ScheduleRemoved(cmd.name, old is not None)

    def _schedule_tick(self: QueueState, cmd: log_pb2.ScheduleTickCommand) -> Ticked | Refused:
        entry = self.schedules.get(cmd.name)
        now = self.clock_us
        if entry is None:
            return Ticked(cmd.name, 0, NEVER, "no such schedule (deleted)")
        if entry.version != cmd.version:
            return Ticked(cmd.name, 0, entry.next_fire_at_us,
                          f"version {cmd.version} is not the schedule's {entry.version}")
        if entry.next_fire_at_us == NEVER or cmd.fire_at_us != entry.next_fire_at_us:
            return Ticked(cmd.name, 0, entry.next_fire_at_us,
                          f"tick {cmd.fire_at_us} is not the next one "
                          f"({entry.next_fire_at_us}): seen already")
        if now < cmd.fire_at_us:
            return Ticked(cmd.name, 0, entry.next_fire_at_us,
                          f"early: leader time {now} before the tick {cmd.fire_at_us}")
        job = queue_pb2.NewJob(queue=entry.queue, priority=entry.priority,
                               payload=entry.payload, fairness_key=entry.fairness_key)
        result = self._enqueue(log_pb2.EnqueueCommand(jobs=[job], owners=[cmd.owner]))
        if not isinstance(result, Enqueued) or len(result.job_ids) != 1:
            return result if isinstance(result, Refused) else rules.reason(
                Refusal.FAILED, f"the tick's enqueue answered {result!r}")
        entry.fired += 1
        entry.last_fire_at_us = cmd.fire_at_us
        entry.last_job_id = result.job_ids[0]
        _set_next(entry, timetable.next_after(entry.cron, entry.every_ms, entry.origin_us,
                                              entry.next_nominal_us), now)
        self.schedules.changed(entry)
        return Ticked(entry.name, entry.last_job_id, entry.next_fire_at_us)

    def restore_schedules(self: QueueState, rows: Iterable[list]) -> None:
        """Put the schedules of a snapshot back (``ScheduleTable.to_json`` rows)."""
        for row in rows:
            entry = Schedule.from_json(row)
            self.schedules.put(entry)
            self.held_bytes += entry.cost
