"""A snapshot of several MiB through a real peer link: a node's Transport sends it over
grpc.aio on 127.0.0.1 to a real peer server (dpq.services.server.Server with the
Replication servicer and its Transport), in pieces, and the receiver hands its driver
the identical bytes, in order with what was sent before and after."""

from __future__ import annotations

import asyncio
import os
import time

from dpq.node.snapshot_pieces import PIECE_BYTES
from dpq.node.transport import Transport
from dpq.paxos import messages as m
from dpq.paxos.types import Ballot, Proposal, Snapshot
from dpq.services.channels import peer_channel
from dpq.services.replication import ReplicationServicer
from dpq.services.server import Server
from dpq.v1 import replication_pb2_grpc

CLUSTER = "5a" * 16
B = Ballot(3, 1)


class Collector:
    """The receiving node's driver, as the servicer sees it: messages delivered in order."""

    def __init__(self) -> None:
        self.delivered: list[m.Message] = []

    def deliver(self, messages) -> None:
        self.delivered.extend(messages)


async def _until(condition, what: str, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_s}s: {what}")
        await asyncio.sleep(0.001)


async def _send_through_a_link(data: bytes):
    driver = Collector()
    receiver = Transport(2, {1: "127.0.0.1:1", 2: "127.0.0.1:2"}, cluster_id=CLUSTER,
                         client_address="127.0.0.1:9", channel=lambda a: peer_channel(a, None))
    servicer = ReplicationServicer(driver, receiver, router=None, health=None,
                                   admit=lambda batch: None, cluster_id=CLUSTER)
    server = Server("127.0.0.1:0", [(
        "dpq.v1.Replication",
        lambda s: replication_pb2_grpc.add_ReplicationServicer_to_server(servicer, s))],
        extras=False)
    await server.start()
    sender = Transport(1, {1: "127.0.0.1:1", 2: f"127.0.0.1:{server.port}"}, cluster_id=CLUSTER,
                       client_address="127.0.0.1:8", channel=lambda a: peer_channel(a, None))
    sender.start()
    try:
        before = m.Commit(1, 2, B, 5)
        snap = m.InstallSnapshot(1, 2, B, Snapshot(11, data), 10)
        after = m.Accept(1, 2, B, 12, (Proposal("c", 1, b"x"),), 11)
        sender.send([before, snap])
        # Queued while the pieces are on their way: it must arrive after the last one.
        await _until(lambda: receiver.pieces.receiving(1) is not None,
                     "the receiver has the first piece")
        sender.send([after])
        await _until(lambda: len(driver.delivered) >= 3, "three messages delivered")
        return driver.delivered, receiver
    finally:
        await sender.stop()
        await server.stop(0)
        await receiver.stop()


def test_a_snapshot_of_several_mib_arrives_identical_in_order_after_travelling_in_pieces():
    data = os.urandom((5 << 20) + 12345)  # not a whole number of pieces
    assert len(data) > 20 * PIECE_BYTES
    delivered, receiver = asyncio.run(_send_through_a_link(data))
    before, snap, after = delivered
    assert isinstance(before, m.Commit) and isinstance(after, m.Accept)
    assert snap == m.InstallSnapshot(1, 2, B, Snapshot(11, data), 10)
    assert type(snap.snapshot.data) is bytes
    assert receiver.dropped_messages == 0 and receiver.pieces.dropped == 0
    assert receiver.pieces.receiving(1) is None  # nothing left half-assembled
