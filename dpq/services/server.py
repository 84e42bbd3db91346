"""A gRPC server with what every dpq process serves besides its own services:
the request log, gRPC health checking and reflection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dpq import logs
from dpq.node.transport import CHANNEL_OPTIONS

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Server:
    """``services`` are (full service name, adder) pairs, e.g.
    ``("dpq.v1.Queue", lambda s: add_QueueServicer_to_server(servicer, s))``.

    ``extras``: also serve health and reflection (the client port does; a node's
    peer port serves its one service and nothing else). ``credentials``: TLS for
    this port (None: plaintext). ``interceptors`` run after the request log (so
    the calls they refuse are logged too), in order."""

    def __init__(self, listen: str,
                 services: Iterable[tuple[str, Callable[[grpc.aio.Server], None]]], *,
                 extras: bool = True,
                 credentials: grpc.ServerCredentials | None = None,
                 interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> None:
        self.server = grpc.aio.server(interceptors=[logs.RequestLogInterceptor(), *interceptors],
                                      options=CHANNEL_OPTIONS)
        self.names = []
        for name, add in services:
            add(self.server)
            self.names.append(name)
        self.health = health.aio.HealthServicer() if extras else None
        if self.health is not None:
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
            reflection.enable_server_reflection(
                (*self.names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME), self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port(listen)
        else:
            self.port = self.server.add_secure_port(listen, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {listen}")

    async def start(self) -> None:
        await self.server.start()
        await self._set(SERVING)

    async def stop(self, grace_s: float) -> None:
        await self._set(NOT_SERVING)
        await self.server.stop(grace_s)

    async def _set(self, status) -> None:
        if self.health is None:
            return
        for service in ("", *self.names):
            result = self.health.set(service, status)
            if asyncio.iscoroutine(result):
                await result
