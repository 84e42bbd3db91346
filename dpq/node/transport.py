"""Paxos messages between nodes, over one gRPC client stream per peer.

Node A sends to node B on a ``Replication.Stream`` call that A opened to B;
B answers on its own stream to A. Each stream carries ``PeerBatch`` messages:
everything queued for a peer when its sender task wakes goes out as one gRPC
message, so a busy leader pays the gRPC cost once per batch, not per slot.

Paxos tolerates lost messages, so the transport never blocks the driver: a
peer that is down or slow has its queue capped (oldest messages dropped) and
its stream reopened with backoff. ``reachable`` tells who answered lately.

Who is speaking: every stream opens with a hello (a ``PeerBatch`` without
messages) and every batch carries the sender's cluster id and node id. The
receiver (:meth:`Transport.receive`) refuses a batch from another cluster or
from a node id it does not know, and drops a message whose ``src`` is not the
sender or whose ``dst`` is not itself; each kind of refusal is logged once per
source. The hello also carries the sender's client address, which is how every
node learns the others' ``--listen`` for ClusterInfo.

A big ``InstallSnapshot`` goes out in pieces, one ``PeerBatch`` each, so the
sender's loop runs (and gRPC flow control paces the stream) between them; the
receiver puts them back together (:mod:`dpq.node.snapshot_pieces`) and copies
the whole snapshot together in a thread (:meth:`Transport.finish`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable

import grpc

from dpq import clock as clocks
from dpq.node import wire
from dpq.node.snapshot_pieces import PIECE_BYTES, Assembled, Reassembler, SnapshotPiece
from dpq.paxos.messages import InstallSnapshot, Message
from dpq.paxos.types import MAX_MESSAGES_PER_BATCH
from dpq.security.cluster_id import OnceLog, fingerprint, same_cluster
from dpq.services.replication import PeerRefused
from dpq.v1 import replication_pb2, replication_pb2_grpc

log = logging.getLogger("dpq.node.transport")

#: Messages kept for a peer that cannot take them; the oldest go first.
MAX_QUEUED = 10_000
#: The longest client address a peer may announce.
MAX_ADDRESS_CHARS = 256


class PeerLink:
    """The outbound stream to one peer."""

    def __init__(self, node_id: int, address: str, channel: grpc.aio.Channel,
                 hello: replication_pb2.PeerBatch) -> None:
        self.node_id = node_id
        self.address = address
        self.channel = channel
        self.stub = replication_pb2_grpc.ReplicationStub(self.channel)
        self.hello = hello  # identity fields only; every batch carries them
        self.queue: deque[Message] = deque()
        self.wake = asyncio.Event()
        self.last_heard = 0.0  # monotonic time of the last message received from it
        self.refused = False  # its last stream was refused (it is of another cluster)
        self.dropped = 0
        self.task: asyncio.Task | None = None
        self._last_error = ""

    def put(self, messages: Iterable[Message]) -> None:
        self.queue.extend(messages)
        overflow = len(self.queue) - MAX_QUEUED
        if overflow > 0:
            for _ in range(overflow):
                self.queue.popleft()
            self.dropped += overflow
        self.wake.set()

    async def _batches(self):
        first = replication_pb2.PeerBatch()
        first.CopyFrom(self.hello)
        yield first
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.queue:
                messages = list(self.queue)
                self.queue.clear()
                # Messages queued while a snapshot's pieces go out wait for the last one.
                for batch in _encoded(messages):
                    batch.cluster_id, batch.sender = self.hello.cluster_id, self.hello.sender
                    yield batch

    async def run(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self.stub.Stream(self._batches())
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                self.refused = code == grpc.StatusCode.PERMISSION_DENIED
                error = f"{code.name}: {exc.details()}"
                # Said once, not on every reconnect.
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) \
                        and error != self._last_error:
                    log.warning("stream to node %d (%s) failed: %s", self.node_id, self.address,
                                error)
                self._last_error = error
            # What was queued while the stream was down is stale by now.
            self.queue.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0 if self.refused else 1.0)


def _encoded(messages: list[Message]):
    """``messages`` as batches, in order: a snapshot over :data:`PIECE_BYTES` as one
    batch per piece, everything else together between them (encoded lazily)."""
    run: list[Message] = []
    for message in messages:
        if isinstance(message, InstallSnapshot) and len(message.snapshot.data) > PIECE_BYTES:
            if run:
                yield wire.encode_batch(run)
                run = []
            yield from wire.encode_pieces(message, PIECE_BYTES)
        else:
            run.append(message)
    if run:
        yield wire.encode_batch(run)


class Transport:
    """All of a node's peer links; the Replication servicer feeds ``received``."""

    def __init__(self, node_id: int, peers: dict[int, str], *, cluster_id: str,
                 client_address: str,
                 channel: Callable[[str], grpc.aio.Channel],
                 clock: clocks.Clock = clocks.monotonic) -> None:
        """``peers``: every node's peer address; ``channel(address)`` opens a link's channel."""
        self.node_id = node_id
        self.clock = clock
        self.cluster_id = cluster_id
        hello = replication_pb2.PeerBatch(cluster_id=cluster_id, sender=node_id,
                                          client_address=client_address)
        self.links = {n: PeerLink(n, addr, channel(addr), hello)
                      for n, addr in sorted(peers.items()) if n != node_id}
        #: Every node's client address, as each announced it (this one's from the config).
        self.client_addresses: dict[int, str] = {node_id: client_address}
        self.refused_batches = 0
        self.dropped_messages = 0
        self._refusals = OnceLog(log)
        self.pieces = Reassembler()

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

    def receive(self, batch: replication_pb2.PeerBatch) -> list[Message | Assembled]:
        """The messages of a batch a peer sent, or :class:`PeerRefused` for the whole batch.

        A snapshot whose last piece this batch holds is an :class:`Assembled`, still
        in parts: :meth:`finish` joins it off the loop."""
        sender = batch.sender
        if not same_cluster(batch.cluster_id, self.cluster_id):
            self.refused_batches += 1
            theirs = fingerprint(batch.cluster_id) if batch.cluster_id else "none"
            self._refusals.warn(("cluster", theirs, sender),
                                "refused peer traffic from node %d of cluster %s: this is cluster "
                                "%s (logged once per source)", sender, theirs,
                                fingerprint(self.cluster_id))
            raise PeerRefused("PeerBatch.cluster_id is not this cluster's")
        link = self.links.get(sender)
        if link is None:
            self.refused_batches += 1
            self._refusals.warn(("sender", sender),
                                "refused peer traffic from node %d: not a peer of node %d "
                                "(logged once per source)", sender, self.node_id)
            raise PeerRefused(f"PeerBatch.sender {sender} is not a peer of node {self.node_id}")
        link.last_heard = self.clock()
        link.refused = False
        address = batch.client_address
        if address and len(address) <= MAX_ADDRESS_CHARS and ":" in address:
            self.client_addresses[sender] = address
        if len(batch.messages) > MAX_MESSAGES_PER_BATCH:
            self.dropped_messages += len(batch.messages)
            self._refusals.warn(("count", sender), "dropped a batch of %d messages from node %d: "
                                "over the limit of %d (logged once)", len(batch.messages),
                                sender, MAX_MESSAGES_PER_BATCH)
            return []
        messages = []
        for message in batch.messages:
            if message.src != sender or message.dst != self.node_id:
                self.dropped_messages += 1
                self._refusals.warn(("route", sender, message.src, message.dst),
                                    "dropped a message from node %d with src %d, dst %d: only "
                                    "its own messages to node %d are taken (logged once)",
                                    sender, message.src, message.dst, self.node_id)
                continue
            try:
                decoded = wire.decode(message, pieces=True)
            except ValueError as exc:
                self.dropped_messages += 1
                self._refusals.warn(("decode", sender), "dropped a message from node %d: %s "
                                    "(logged once)", sender, exc)
                continue
            if isinstance(decoded, SnapshotPiece):
                try:
                    decoded = self.pieces.add(decoded)
                except ValueError as exc:
                    self.dropped_messages += 1
                    self._refusals.warn(("piece", sender), "dropped a %s (logged once)", exc)
                    continue
                if decoded is None:
                    continue
            messages.append(decoded)
        return messages

    @staticmethod
    async def finish(received: list[Message | Assembled]) -> list[Message]:
        """``received`` with every :class:`Assembled` snapshot joined, in a thread
        (``bytes.join`` of large parts releases the GIL, so the loop runs meanwhile)."""
        if not any(isinstance(item, Assembled) for item in received):
            return received  # type: ignore[return-value]
        return [await asyncio.to_thread(item.join) if isinstance(item, Assembled) else item
                for item in received]

    def heard_from(self, node_id: int) -> None:
        link = self.links.get(node_id)
        if link is not None:
            link.last_heard = self.clock()

    def reachable(self, node_id: int, within_s: float) -> bool:
        if node_id == self.node_id:
            return True
        link = self.links.get(node_id)
        if link is None or link.refused:
            return False
        # Followers rarely hear each other; an open connection counts too.
        if link.channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY:
            return True
        return self.clock() - link.last_heard <= within_s
