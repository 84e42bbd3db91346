"""Which nodes a consumer polls: learned with ClusterInfo, refreshed periodically.

ClusterInfo is asked of the address that answered last, then of the others
and the seeds (the targets the consumer was given: a gateway or nodes). The
answer's ``nodes[].address`` are the nodes to poll; ``reachable`` says which
ones the cluster cannot reach now (their pollers start with a backoff).
Without discovery, or if the target does not implement ClusterInfo, the seeds
themselves are polled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from dpq.client._endpoints import Channels
from dpq.client._retry import RetryPolicy
from dpq.client.errors import server_error
from dpq.v1 import queue_pb2

log = logging.getLogger("dpq.client")

CLUSTER_INFO_TIMEOUT_S = 5.0
#: The cluster does not let us in (no or a wrong bearer token).
REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})

#: address -> reachable, the leader first, then in the cluster's order
Nodes = dict[str, bool]


class Membership:
    """Tells ``on_nodes`` the nodes to poll, at start and on every refresh."""

    def __init__(self, seeds: list[str], channels: Channels, *, discover: bool,
                 interval: float, retry: RetryPolicy,
                 on_nodes: Callable[[Nodes], None]) -> None:
        self._seeds = seeds
        self._channels = channels
        self._discover = discover
        self._interval = interval
        self._retry = retry
        self._on_nodes = on_nodes
        self._known: list[str] = []

    async def run(self) -> None:
        """Forever: ask, tell, wait (less after a failure)."""
        if not self._discover:
            self._on_nodes({seed: True for seed in self._seeds})
            return
        failures = 0
        while True:
            nodes = await self.ask()
            if nodes is None:
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "no endpoint of %s answered ClusterInfo (try %d)",
                        self._known or self._seeds, failures)
                await asyncio.sleep(min(self._interval, self._retry.backoff(failures - 1)))
                continue
            failures = 0
            self._on_nodes(nodes)
            await asyncio.sleep(self._interval)

    async def ask(self) -> Nodes | None:
        """The nodes, from the first address that answers; None if none does."""
        for address in dict.fromkeys([*self._known, *self._seeds]):
            try:
                response = await self._channels.stub(address).ClusterInfo(
                    queue_pb2.ClusterInfoRequest(), timeout=CLUSTER_INFO_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return {seed: True for seed in self._seeds}
                if exc.code() in REFUSED:  # asking again will not help: the consumer fails
                    raise server_error(exc.code(), exc.details() or "", "ClusterInfo",
                                       address) from None
                continue
            # The leader first: acks go there, where they are proposed without a hop.
            ordered = sorted(response.nodes, key=lambda n: n.role != "leader")
            nodes = {n.address: n.reachable for n in ordered if n.address}
            if not nodes:
                return {address: True}
            # Ask the one that answered first next time, then the nodes.
            self._known = [address, *nodes]
            return nodes
        return None
