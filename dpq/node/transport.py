"""Paxos messages between nodes, over one gRPC client stream per peer.

Node A sends to node B on a ``Replication.Stream`` call that A opened to B;
B answers on its own stream to A. Each stream carries ``PeerBatch`` messages:
everything queued for a peer when its sender task wakes goes out as one gRPC
message, so a busy leader pays the gRPC cost once per batch, not per slot.

Paxos tolerates lost messages, so the transport never blocks the driver: a
peer that is down or slow has its queue capped (oldest messages dropped) and
its stream reopened with backoff. ``reachable`` tells who answered lately.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable

import grpc

from dpq.node import wire
from dpq.paxos.messages import Message
from dpq.v1 import replication_pb2_grpc

log = logging.getLogger("dpq.node.transport")

#: Messages kept for a peer that cannot take them; the oldest go first.
MAX_QUEUED = 10_000
#: gRPC messages up to this size: snapshots travel whole.
MAX_MESSAGE_BYTES = 512 << 20
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]


class PeerLink:
    """The outbound stream to one peer."""

    def __init__(self, node_id: int, address: str) -> None:
        self.node_id = node_id
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = replication_pb2_grpc.ReplicationStub(self.channel)
        self.queue: deque[Message] = deque()
        self.wake = asyncio.Event()
        self.last_heard = 0.0  # monotonic time of the last message received from it
        self.dropped = 0
        self.task: asyncio.Task | None = None

    def put(self, messages: Iterable[Message]) -> None:
        self.queue.extend(messages)
        overflow = len(self.queue) - MAX_QUEUED
        if overflow > 0:
            for _ in range(overflow):
                self.queue.popleft()
            self.dropped += overflow
        self.wake.set()

    async def _batches(self):
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.queue:
                messages = list(self.queue)
                self.queue.clear()
                yield wire.encode_batch(messages)

    async def run(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self.stub.Stream(self._batches())
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    log.warning("stream to node %d (%s) failed: %s", self.node_id, self.address,
                                exc.details())
            # What was queued while the stream was down is stale by now.
            self.queue.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)


class Transport:
    """All of a node's peer links; the Replication servicer feeds ``received``."""

    def __init__(self, node_id: int, peers: dict[int, str]) -> None:
        self.node_id = node_id
        self.links = {n: PeerLink(n, addr) for n, addr in sorted(peers.items()) if n != node_id}

    def start(self) -> None:
        for link in self.links.values():
            link.task = asyncio.create_task(link.run(), name=f"peer-{link.node_id}")

    async def stop(self) -> None:
        for link in self.links.values():
            if link.task is not None:
                link.task.cancel()
        for link in self.links.values():
            if link.task is not None:
                try:
                    await link.task
                except asyncio.CancelledError:
                    pass
            await link.channel.close(grace=None)

    def send(self, messages: list[Message]) -> None:
        by_peer: dict[int, list[Message]] = {}
        for message in messages:
            by_peer.setdefault(message.dst, []).append(message)
        for dst, batch in by_peer.items():
            link = self.links.get(dst)
            if link is not None:
                link.put(batch)

    def heard_from(self, node_id: int) -> None:
        link = self.links.get(node_id)
        if link is not None:
            link.last_heard = time.monotonic()

    def reachable(self, node_id: int, within_s: float) -> bool:
        if node_id == self.node_id:
            return True
        link = self.links.get(node_id)
        if link is None:
            return False
        # Followers rarely hear each other; an open connection counts too.
        if link.channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY:
            return True
        return time.monotonic() - link.last_heard <= within_s
