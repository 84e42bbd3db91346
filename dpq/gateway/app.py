"""One ``dpq-gateway``: the health monitor, the batcher and the Queue service."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dpq.gateway.batcher import EnqueueBatcher
from dpq.gateway.monitor import HealthMonitor
from dpq.gateway.operations import GatewayOperations
from dpq.queue.validate import Limits
from dpq.services.queue import QueueServicer
from dpq.services.server import Server
from dpq.v1 import queue_pb2, queue_pb2_grpc

log = logging.getLogger("dpq.gateway")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    listen: str
    nodes: list[str]
    max_batch: int = 1000
    max_delay_ms: float = 2.0
    max_inflight: int = 4
    dedup_window_ms: int = 3_600_000
    health_interval_ms: int = 250
    max_payload_bytes: int = 1 << 20


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.monitor = HealthMonitor(config.nodes, interval_ms=config.health_interval_ms)
        self.batcher = EnqueueBatcher(self.monitor, max_batch=config.max_batch,
                                      max_delay_ms=config.max_delay_ms,
                                      max_inflight=config.max_inflight,
                                      dedup_window_ms=config.dedup_window_ms)
        self.ops = GatewayOperations(self.monitor, self.batcher,
                                     Limits(max_payload_bytes=config.max_payload_bytes))
        servicer = QueueServicer(self.ops)
        self.server = Server(config.listen, [(
            queue_pb2.DESCRIPTOR.services_by_name["Queue"].full_name,
            lambda s: queue_pb2_grpc.add_QueueServicer_to_server(servicer, s))])
        self.port = self.server.port

    async def start(self) -> None:
        self.monitor.start()
        self.batcher.start()
        await self.server.start()
        log.info("gateway serving on %s for nodes %s", self.config.listen, self.config.nodes)

    async def stop(self, grace_s: float = 1.0) -> None:
        await self.server.stop(grace_s)
        await self.batcher.stop()
        await self.monitor.stop()
