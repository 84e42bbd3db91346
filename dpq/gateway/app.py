"""One ``dpq-gateway``: the health monitor, the batching proposer and the Queue service.

With TLS material (``GatewayConfig.tls``, from ``--tls-dir`` or the explicit
files; the gateway's own certificate), both sides are protected: its client
port serves TLS and wants the clients' bearer token, its calls to the nodes'
peer ports (WatchHealth, Propose) present the gateway certificate (mutual
TLS), and its calls to the nodes' client ports (forwarded Queue calls,
ClusterInfo) go over TLS with the token.

Health (the standard gRPC health service, ``""`` and ``dpq.v1.Queue``): SERVING
while the gateway knows a leader (a reachable node that the reachable nodes name
as leader: ``HealthMonitor.leader``), so it can take enqueues; NOT_SERVING before,
and whenever no reachable node names a reachable leader. A gateway forwards to
the nodes and has no log of its own to catch up.
"""

from __future__ import annotations

import asyncio
import logging

from dpq.gateway import metrics as gateway_metrics
from dpq.gateway.config import GatewayConfig
from dpq.gateway.monitor import HealthMonitor
from dpq.gateway.operations import GatewayOperations
from dpq.gateway.owners import OwnerPicker
from dpq.gateway.router import GatewayRouter
from dpq.proposing.proposer import Proposer
from dpq.queue.validate import Limits
from dpq.services.admission import AdmissionGate
from dpq.services.metrics import MetricsEndpoint
from dpq.services.queue import QueueServicer
from dpq.services.server import Server
from dpq.v1 import queue_pb2, queue_pb2_grpc

log = logging.getLogger("dpq.gateway")

#: How often the gateway's gRPC health status is brought up to date.
READINESS_CHECK_S = 0.1


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        server_credentials = peer_credentials = client_credentials = None
        interceptors: tuple = ()
        if config.tls is not None:
            from dpq.security import auth, tls

            server_credentials = tls.server_credentials(config.tls, require_client_cert=False)
            peer_credentials = tls.peer_channel_credentials(config.tls)
            client_credentials = tls.client_channel_credentials(config.tls)
            interceptors = (auth.TokenInterceptor(config.tls.token),)
        self.monitor = HealthMonitor(config.nodes, interval_ms=config.health_interval_ms,
                                     peer_credentials=peer_credentials,
                                     client_credentials=client_credentials)
        self.proposer = Proposer("gateway", GatewayRouter(self.monitor),
                                 max_inflight=config.max_inflight)
        self.ops = GatewayOperations(self.monitor, self.proposer, OwnerPicker(self.monitor),
                                     Limits(max_payload_bytes=config.max_payload_bytes),
                                     dedup_window_ms=config.dedup_window_ms)
        servicer = QueueServicer(self.ops, AdmissionGate(config.admission))
        self.server = Server(config.listen, [(
            queue_pb2.DESCRIPTOR.services_by_name["Queue"].full_name,
            lambda s: queue_pb2_grpc.add_QueueServicer_to_server(servicer, s))],
            credentials=server_credentials, interceptors=interceptors,
            limits=config.server_limits)
        self.port = self.server.port
        self.ops.messages = self.server.messages.totals
        self.console = None  # the web console's HTTP server (--http-listen)
        if config.http_listen is not None:
            from dpq.console.api import http_server

            self.console = http_server(self.ops, config.http_listen,
                                       config.tls.token if config.tls is not None else None)
        self.http_port = 0  # the console's, once it listens
        self._readiness: asyncio.Task | None = None
        #: GET /metrics on --metrics-listen (dpq.gateway.metrics), while serving.
        self.metrics: MetricsEndpoint | None = None

    async def start(self) -> None:
        self.monitor.start()
        self.proposer.start()
        if self.console is not None:  # first: up once the gRPC port answers
            self.http_port = await self.console.start(self.config.http_listen or "")
        await self.server.start(serving=False)  # until it knows a leader
        self._readiness = asyncio.create_task(self._watch_readiness(), name="readiness")
        if self.config.metrics_listen:
            self.metrics = gateway_metrics.endpoint(self)
            await self.metrics.start(self.config.metrics_listen)
        log.info("gateway serving on %s for nodes %s (%s)", self.config.listen, self.config.nodes,
                 "TLS" if self.config.tls is not None else "plaintext")

    async def stop(self, grace_s: float = 1.0) -> None:
        if self._readiness is not None:
            self._readiness.cancel()
            await asyncio.gather(self._readiness, return_exceptions=True)
        if self.console is not None:
            await self.console.stop()
        await self.server.stop(grace_s)
        if self.metrics is not None:
            await self.metrics.stop()
        await self.proposer.stop()
        await self.monitor.stop()

    async def _watch_readiness(self) -> None:
        """SERVING while a leader is known (see the module docstring)."""
        serving = None
        while True:
            leader = self.monitor.leader()
            if (leader is not None) != serving:
                serving = leader is not None
                await self.server.set_serving(serving)
                log.info("gateway health: %s", f"SERVING (node {leader.node_id} leads)"
                         if leader is not None else "NOT_SERVING (no leader known)")
            await asyncio.sleep(READINESS_CHECK_S)
