"""CreateSchedule, DeleteSchedule and ListSchedules on a node: a part of
:class:`dpq.node.operations.NodeOperations` (periodic jobs, ``dpq.queue.schedules``).

A change is checked here (``dpq.queue.validate.schedule``: INVALID_ARGUMENT naming
the field, the value and the limit), proposed as one command, and answered once
this node's replica applied it, so a ListSchedules that follows on this node sees
it. ListSchedules reads this node's replica (a gateway asks the leader).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dpq.errors import AlreadyExists, ResourceExhausted
from dpq.node.router import now_us
from dpq.proposing.results import schedule_removed, schedule_set
from dpq.queue import validate
from dpq.queue.schedules import DEFAULT_PRIORITY, MAX_SCHEDULES, SCHEDULE_OVERHEAD
from dpq.v1 import log_pb2, queue_pb2

if TYPE_CHECKING:
    from dpq.node.operations import NodeOperations


def _spec(s: queue_pb2.Schedule) -> queue_pb2.Schedule:
    """What the log carries of a schedule: the request's fields, not the answer-only ones."""
    return queue_pb2.Schedule(name=s.name, queue=s.queue, priority=s.priority,
                              payload=s.payload, cron=s.cron.strip(), every_ms=s.every_ms,
                              start_at=s.start_at, jitter_ms=s.jitter_ms,
                              fairness_key=s.fairness_key)


class ScheduleOperations:
    """The schedule RPCs of a node (see the module)."""

    async def create_schedule(self: NodeOperations,
                              request: queue_pb2.CreateScheduleRequest) -> queue_pb2.Schedule:
        spec = _spec(request.schedule)
        validate.schedule(spec, self.policy.limits, now_us=now_us())
        table = self.state.schedules
        old = table.get(spec.name)
        if old is not None and not request.replace:  # the state decides too; this saves a round
            raise _exists(spec.name)
        if old is None and len(table) >= MAX_SCHEDULES:
            raise ResourceExhausted(f"schedule.name: {len(table)} schedules exist, the limit is "
                                    f"{MAX_SCHEDULES}: delete some first")
        self._check_budget(SCHEDULE_OVERHEAD + len(spec.payload) + len(spec.name),
                           spec.priority or DEFAULT_PRIORITY)
        _, result = await self._operate(log_pb2.Command(
            create_schedule=log_pb2.CreateScheduleCommand(schedule=spec,
                                                          replace=request.replace)))
        done = schedule_set(result)
        if not done.changed:
            raise _exists(spec.name)
        entry = table.get(spec.name)
        if entry is not None and entry.version == done.version:
            return entry.to_pb()
        answer = queue_pb2.Schedule()  # changed again meanwhile: what this command made
        answer.CopyFrom(spec)
        answer.version, answer.next_fire_at_us = done.version, done.next_fire_at_us
        return answer

    async def delete_schedule(self: NodeOperations, name: str) -> queue_pb2.ScheduleDeleted:
        validate.schedule_name(name)
        slot, result = await self._operate(log_pb2.Command(
            delete_schedule=log_pb2.DeleteScheduleCommand(name=name)))
        done = schedule_removed(result)
        return queue_pb2.ScheduleDeleted(name=done.name, existed=done.existed, slot=slot)

    async def list_schedules(self: NodeOperations) -> queue_pb2.ListSchedulesResponse:
        table = self.state.schedules
        return queue_pb2.ListSchedulesResponse(
            schedules=[table.entries[name].to_pb() for name in sorted(table.entries)])


def _exists(name: str) -> AlreadyExists:
    return AlreadyExists(f"schedule.name: a schedule {name!r} exists; delete it first or set "
                         "replace (dpq schedule add --replace)")
