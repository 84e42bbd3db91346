"""CreateSchedule, DeleteSchedule and ListSchedules on a gateway: checked here (a bad
request costs no hop), forwarded to the leader like the other managing RPCs. A part
of :class:`dpq.gateway.operations.GatewayOperations`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dpq.queue import validate
from dpq.v1 import queue_pb2

if TYPE_CHECKING:
    from dpq.gateway.operations import GatewayOperations


class GatewayScheduleOperations:
    async def create_schedule(self: GatewayOperations,
                              request: queue_pb2.CreateScheduleRequest) -> queue_pb2.Schedule:
        validate.schedule(request.schedule, self.limits)
        return await self._to_leader("CreateSchedule", request)

    async def delete_schedule(self: GatewayOperations,
                              name: str) -> queue_pb2.ScheduleDeleted:
        validate.schedule_name(name)
        return await self._to_leader("DeleteSchedule", queue_pb2.DeleteScheduleRequest(name=name))

    async def list_schedules(self: GatewayOperations) -> queue_pb2.ListSchedulesResponse:
        return await self._to_leader("ListSchedules", queue_pb2.ListSchedulesRequest())
