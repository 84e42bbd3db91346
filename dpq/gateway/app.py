"""One ``dpq-gateway``: the health monitor, the batching proposer and the Queue service.

With TLS material (``GatewayConfig.tls``, from ``--tls-dir`` or the explicit
files; the gateway's own certificate), both sides are protected: its client
port serves TLS and wants the clients' bearer token, its calls to the nodes'
peer ports (WatchHealth, Propose) present the gateway certificate (mutual
TLS), and its calls to the nodes' client ports (forwarded Queue calls,
ClusterInfo) go over TLS with the token.
"""

from __future__ import annotations

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
        #: GET /metrics on --metrics-listen (dpq.gateway.metrics), while serving.
        self.metrics: MetricsEndpoint | None = None

    async def start(self) -> None:
        self.monitor.start()
        self.proposer.start()
        await self.server.start()
        if self.config.metrics_listen:
            self.metrics = gateway_metrics.endpoint(self)
            await self.metrics.start(self.config.metrics_listen)
        log.info("gateway serving on %s for nodes %s (%s)", self.config.listen, self.config.nodes,
                 "TLS" if self.config.tls is not None else "plaintext")

    async def stop(self, grace_s: float = 1.0) -> None:
        await self.server.stop(grace_s)
        if self.metrics is not None:
            await self.metrics.stop()
        await self.proposer.stop()
        await self.monitor.stop()
