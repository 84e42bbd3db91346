"""A gRPC server with what every dpq process serves besides its own services:
the request log, message counts, gRPC health checking and reflection, an exclusive port
(``dpq.services.ports``), a clear status for bodies that are too big or do not
parse (``dpq.services.decoding``) and the port limits (``dpq.services.limits``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dpq import logs
from dpq.services import ports
from dpq.services.counting import MessageCounter
from dpq.services.decoding import DecodingInterceptor
from dpq.services.limits import DEFAULT_LIMITS, HealthWatchLimiter, ServerLimits

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


KEEPALIVE = [("grpc.keepalive_time_ms", 10_000)]


class Server:
    """``services`` are (full service name, adder) pairs, e.g.
    ``("dpq.v1.Queue", lambda s: add_QueueServicer_to_server(servicer, s))``.

    ``extras``: also serve health and reflection (the client port does; a node's
    peer port serves its one service and nothing else). ``credentials``: TLS for
    this port (None: plaintext). ``interceptors`` run after the request log (so
    the calls they refuse are logged too), in order, before the body is decoded.
    ``limits``: message sizes and WatchHealth limits (``dpq.services.limits``).

    Raises :class:`dpq.services.ports.PortTaken` (an ``OSError``) when another
    process listens on ``listen``."""

    def __init__(self, listen: str,
                 services: Iterable[tuple[str, Callable[[grpc.aio.Server], None]]], *,
                 extras: bool = True,
                 credentials: grpc.ServerCredentials | None = None,
                 interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
                 limits: ServerLimits = DEFAULT_LIMITS) -> None:
        services = list(services)
        self.names = [name for name, _ in services]
        ports.probe(listen)  # before gRPC, which would log its own error first
        receive = limits.receive_cap(self.names)
        # Responses (a Dequeue of many big jobs, a snapshot) may be as big as
        # the peer plane allows; requests are capped per service.
        send = max(receive, limits.max_peer_message_bytes)
        #: Messages in and out per method (``dpq.services.counting``).
        self.messages = MessageCounter()
        self.server = grpc.aio.server(
            interceptors=[self.messages, logs.RequestLogInterceptor(), *interceptors,
                          DecodingInterceptor(limits.limit_for),
                          HealthWatchLimiter(limits)],
            options=[*ports.EXCLUSIVE, *KEEPALIVE,
                     ("grpc.max_receive_message_length", receive),
                     ("grpc.max_send_message_length", send)])
        for _, add in services:
            add(self.server)
        self.health = health.aio.HealthServicer() if extras else None
        self._stopping = False
        if self.health is not None:
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
            reflection.enable_server_reflection(
                (*self.names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME), self.server)
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(listen)
            else:
                self.port = self.server.add_secure_port(listen, credentials)
        except RuntimeError:  # taken since the probe, or not an address of this host
            self.port = 0
        if self.port == 0:
            ports.probe(listen)
            raise OSError(f"cannot listen on {listen}")

    async def start(self, serving: bool = True) -> None:
        """``serving=False``: health says NOT_SERVING until :meth:`set_serving` (a node
        until it has caught up, a gateway until it knows a leader)."""
        await self._set(SERVING if serving else NOT_SERVING)
        await self.server.start()

    async def set_serving(self, serving: bool) -> None:
        """The health status of ``""`` and every service of this port (ignored once
        :meth:`stop` began: a stopping server stays NOT_SERVING)."""
        if not self._stopping:
            await self._set(SERVING if serving else NOT_SERVING)

    async def stop(self, grace_s: float) -> None:
        self._stopping = True
        await self._set(NOT_SERVING)
        await self.server.stop(grace_s)

    async def _set(self, status) -> None:
        if self.health is None:
            return
        for service in ("", *self.names):
            result = self.health.set(service, status)
            if asyncio.iscoroutine(result):
                await result
