"""How long a snapshot sent to a peer holds the event loop: in pieces vs whole.

One process, one uvloop loop (as a node runs, ``dpq.runtime``): a node's
``Transport`` sends an ``InstallSnapshot`` of ``--mib`` MiB of random bytes over
grpc.aio on 127.0.0.1 to a real peer server (``dpq.services.server.Server`` with
the Replication servicer over a second ``Transport``), which hands it to a
collecting driver. A 1-ms asyncio ticker runs meanwhile; its worst lateness is
the longest the loop was held. Sender and receiver share the loop here, so the
stall is the worse of both sides' (on two nodes each side has its own loop). On a
busy machine the lateness also counts time the loop thread waited for a core, so
the loop thread's CPU time between two ticks (``time.thread_time``) is shown too:
the work the loop did in one go, whatever else ran.

- ``pieces``: as dpq sends it (``dpq.node.snapshot_pieces.PIECE_BYTES`` a piece,
  the receiver joins them in a thread);
- ``whole``: one message with total 0, as before pieces (a Promise's snapshot
  still travels so).

Prints the median over ``--repeat`` runs (the modes alternate) of the worst
ticker lateness and of the time from send to delivery. Usage, from the
checkout's root::

    python bench/snapshot_send.py [--mib 40] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

# This checkout's dpq, not an installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpq import runtime
from dpq.node import transport
from dpq.node.snapshot_pieces import PIECE_BYTES
from dpq.paxos import messages as m
from dpq.paxos.types import Ballot, Snapshot
from dpq.services.channels import peer_channel
from dpq.services.replication import ReplicationServicer
from dpq.services.server import Server
from dpq.v1 import replication_pb2_grpc

CLUSTER = "be" * 16
B = Ballot(1, 1)


class _Collector:
    def __init__(self) -> None:
        self.delivered: list[m.Message] = []

    def deliver(self, messages) -> None:
        self.delivered.extend(messages)


async def _until(condition, deadline_s: float = 120.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the snapshot did not arrive")
        await asyncio.sleep(0.001)


async def _measure(data: bytes, piece_bytes: int) -> tuple[float, float, float]:
    """(worst ticker lateness, worst loop-thread CPU time between two ticks,
    send-to-delivery time), in ms."""
    transport.PIECE_BYTES = piece_bytes  # what PeerLink splits by
    driver = _Collector()
    receiver = transport.Transport(2, {1: "127.0.0.1:1", 2: "127.0.0.1:2"}, cluster_id=CLUSTER,
                                   client_address="127.0.0.1:9",
                                   channel=lambda a: peer_channel(a, None))
    servicer = ReplicationServicer(driver, receiver, router=None, health=None,
                                   admit=lambda batch: None, cluster_id=CLUSTER)
    server = Server("127.0.0.1:0", [(
        "dpq.v1.Replication",
        lambda s: replication_pb2_grpc.add_ReplicationServicer_to_server(servicer, s))],
        extras=False)
    await server.start()
    sender = transport.Transport(1, {1: "127.0.0.1:1", 2: f"127.0.0.1:{server.port}"},
                                 cluster_id=CLUSTER, client_address="127.0.0.1:8",
                                 channel=lambda a: peer_channel(a, None))
    sender.start()
    worst = worst_cpu = 0.0
    ticking = True

    async def ticker() -> None:
        nonlocal worst, worst_cpu
        while ticking:
            t, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - t - 0.001)
            worst_cpu = max(worst_cpu, time.thread_time() - cpu)

    try:
        sender.send([m.Commit(1, 2, B, 1)])  # the stream is up before the clock starts
        await _until(lambda: len(driver.delivered) == 1)
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        worst = worst_cpu = 0.0
        t0 = time.perf_counter()
        sender.send([m.InstallSnapshot(1, 2, B, Snapshot(2, data), 1)])
        await _until(lambda: len(driver.delivered) == 2)
        elapsed = time.perf_counter() - t0
        ticking = False
        await tick
        assert driver.delivered[1].snapshot.data == data
    finally:
        await sender.stop()
        await server.stop(0)
        await receiver.stop()
    return worst * 1e3, worst_cpu * 1e3, elapsed * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--piece-kib", type=int, default=PIECE_BYTES >> 10,
                        help="piece size to try (default: dpq's PIECE_BYTES)")
    args = parser.parse_args()
    data = os.urandom(args.mib << 20)
    modes = {"pieces": args.piece_kib << 10, "whole": 1 << 62}
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in modes}
    for _ in range(args.repeat):
        for name, piece_bytes in modes.items():
            samples[name].append(runtime.run(_measure(data, piece_bytes)))
    print(f"{args.mib} MiB snapshot, {args.piece_kib} KiB pieces, medians of {args.repeat} "
          "runs, one uvloop loop for sender and receiver")
    print(f"{'mode':<8}{'worst stall ms':>16}{'worst loop CPU ms':>19}{'send→delivered ms':>19}"
          "   all stalls (ms)")
    for name, got in samples.items():
        stall, cpu, took = (statistics.median(column) for column in zip(*got, strict=True))
        print(f"{name:<8}{stall:>16.1f}{cpu:>19.1f}{took:>19.0f}   "
              + " ".join(f"{s:.1f}" for s, _, _ in got))


if __name__ == "__main__":
    main()
