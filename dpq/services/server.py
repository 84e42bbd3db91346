"""A gRPC server with what every dpq process serves besides its own services:
the request log, gRPC health checking and reflection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dpq import logs
from dpq.node.transport import CHANNEL_OPTIONS

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Server:
    """``services`` are (full service name, adder) pairs, e.g.
    ``("dpq.v1.Queue", lambda s: add_QueueServicer_to_server(servicer, s))``."""

    def __init__(self, listen: str,
                 services: Iterable[tuple[str, Callable[[grpc.aio.Server], None]]]) -> None:
        self.server = grpc.aio.server(interceptors=[logs.RequestLogInterceptor()],
                                      options=CHANNEL_OPTIONS)
        self.names = []
        for name, add in services:
            add(self.server)
            self.names.append(name)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*self.names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {listen}")

    async def start(self) -> None:
        await self.server.start()
        await self._set(SERVING)

    async def stop(self, grace_s: float) -> None:
        await self._set(NOT_SERVING)
        await self.server.stop(grace_s)

    async def _set(self, status) -> None:
        for service in ("", *self.names):
            result = self.health.set(service, status)
            if asyncio.iscoroutine(result):
                await result
