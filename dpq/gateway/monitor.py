"""The gateway's live view of every node, from each node's WatchHealth stream.

The gateway is given the nodes' client addresses (``--nodes``); Queue calls go
there. Replication (WatchHealth, and ProposeStream to the leader) is served on each
node's peer port, which the gateway learns from the node's own ClusterInfo
(``peer_address`` of the entry whose id is the answering node's) before it
opens the health stream, and again whenever that stream breaks.

A node counts as reachable while its stream is open and its last report is
younger than ``stale_s``. The reports feed ``dpq.gateway.balancer`` (weights for the
round-robin) and tell the gateway who leads.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from dpq import clock as clocks
from dpq.gateway.balancer import NodeHealth
from dpq.proposing.stream import ProposalStream
from dpq.services.channels import CHANNEL_OPTIONS, peer_channel
from dpq.v1 import queue_pb2, queue_pb2_grpc, replication_pb2, replication_pb2_grpc

log = logging.getLogger("dpq.gateway.monitor")


class PeerAddressUnknown(Exception):
    """The node's ClusterInfo names no peer port for it."""


class NodeView:
    """One node as the gateway sees it: its client port, and its peer port once learnt."""

    def __init__(self, address: str,
                 peer_credentials: grpc.ChannelCredentials | None = None,
                 client_credentials: grpc.ChannelCredentials | None = None) -> None:
        """``peer_credentials``: for the peer port (mutual TLS with the gateway's
        certificate); ``client_credentials``: for the client port (TLS + token)."""
        self.address = address
        self.channel = (grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
                        if client_credentials is None else
                        grpc.aio.secure_channel(address, client_credentials,
                                                options=CHANNEL_OPTIONS))
        self.queue = queue_pb2_grpc.QueueStub(self.channel)
        self.peer_address: str | None = None
        self.peer_channel: grpc.aio.Channel | None = None
        self.replication: replication_pb2_grpc.ReplicationStub | None = None
        #: Proposals to this node while it leads, on one stream over ``peer_channel``.
        self.proposals: ProposalStream | None = None
        self._peer_credentials = peer_credentials
        self.report: replication_pb2.NodeHealthReport | None = None
        self.received_at = 0.0
        self.task: asyncio.Task | None = None

    @property
    def node_id(self) -> int | None:
        return self.report.node_id if self.report is not None else None

    async def resolve_peer(self, timeout_s: float = 5.0) -> None:
        """Ask the node for its peer port; (re)open the channel there if it moved."""
        info = await self.queue.ClusterInfo(queue_pb2.ClusterInfoRequest(), timeout=timeout_s)
        me = next((n for n in info.nodes if n.node_id == info.node_id), None)
        if me is None or not me.peer_address:
            raise PeerAddressUnknown(f"{self.address} names no peer port for itself "
                                     "(a node started without --peer-listen?)")
        if me.peer_address != self.peer_address:
            await self.close_peer()
            self.peer_address = me.peer_address
            self.peer_channel = peer_channel(me.peer_address, self._peer_credentials)
            self.replication = replication_pb2_grpc.ReplicationStub(self.peer_channel)
            self.proposals = ProposalStream(self.replication)

    async def close_peer(self) -> None:
        if self.proposals is not None:
            self.proposals.close()
            self.proposals = None
        if self.peer_channel is not None:
            await self.peer_channel.close(grace=None)
            self.peer_channel = self.replication = None

    async def close(self) -> None:
        await self.close_peer()
        await self.channel.close(grace=None)


class HealthMonitor:
    def __init__(self, addresses: list[str], *, interval_ms: int = 250, stale_s: float = 1.5,
                 peer_credentials: grpc.ChannelCredentials | None = None,
                 client_credentials: grpc.ChannelCredentials | None = None,
                 clock: clocks.Clock = clocks.monotonic) -> None:
        self.nodes = [NodeView(a, peer_credentials, client_credentials) for a in addresses]
        self.interval_ms = interval_ms
        self.stale_s = stale_s
        self.clock = clock
        self.changed = asyncio.Event()
        #: Bumped whenever a node's stream breaks, so users of the weights refresh at once.
        self.version = 0

    def start(self) -> None:
        for node in self.nodes:
            node.task = asyncio.create_task(self._watch(node), name=f"watch-{node.address}")

    async def stop(self) -> None:
        for node in self.nodes:
            if node.task is not None:
                node.task.cancel()
        await asyncio.gather(*(n.task for n in self.nodes if n.task), return_exceptions=True)
        for node in self.nodes:
            await node.close()

    async def _watch(self, node: NodeView) -> None:
        backoff = 0.1
        said = ""
        while True:
            try:
                await node.resolve_peer()
                stream = node.replication.WatchHealth(
                    replication_pb2.HealthRequest(interval_ms=self.interval_ms))
                async for report in stream:
                    self.received(node, report)
                    backoff = 0.1
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED) and exc.details() != said:
                    log.warning("health stream of %s failed: %s", node.address, exc.details())
                    said = exc.details()
            except PeerAddressUnknown as exc:
                if str(exc) != said:
                    log.warning("%s", exc)
                    said = str(exc)
            node.received_at = 0.0
            self.version += 1
            self.changed.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def received(self, node: NodeView, report: replication_pb2.NodeHealthReport) -> None:
        """``node`` reported its health (from its stream; tests call it directly)."""
        node.report, node.received_at = report, self.clock()
        self.changed.set()

    def reachable(self, node: NodeView) -> bool:
        return node.report is not None and self.clock() - node.received_at <= self.stale_s

    def health(self) -> list[NodeHealth]:
        """Every node that ever reported, for ``dpq.gateway.balancer.weights``."""
        out = []
        for node in self.nodes:
            r = node.report
            if r is None:
                continue
            out.append(NodeHealth(node_id=r.node_id, reachable=self.reachable(node),
                                  cpu_percent=r.cpu_percent, ready_depth=r.ready_depth,
                                  consume_rate=r.consume_rate,
                                  waiting_consumers=r.waiting_consumers))
        return out

    def leader(self) -> NodeView | None:
        """The node the reachable nodes name as leader (the most recent report wins)."""
        votes = sorted((n for n in self.nodes if self.reachable(n) and n.report.leader_id),
                       key=lambda n: n.received_at, reverse=True)
        for voter in votes:
            for node in self.nodes:
                if node.node_id == voter.report.leader_id and self.reachable(node):
                    return node
        return None

    def live(self) -> list[NodeView]:
        return [n for n in self.nodes if self.reachable(n)]

    def by_id(self, node_id: int) -> NodeView | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)
