"""A Consume stream per node: started, kept and stopped as the node list changes.

Each node gets a :class:`~dpq.client._consume_stream.NodeStream` (which
long-polls instead where the node has no Consume stream); with
``streams=False`` every node is long-polled (:class:`~dpq.client._poller.NodePoller`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from dpq.client._consume_stream import FINISH_S, NodeStream
from dpq.client._endpoints import Channels, Endpoints
from dpq.client._held import Held, JobRecord
from dpq.client._membership import Nodes
from dpq.client._poller import NodePoller, PollSpec
from dpq.client._retry import RetryPolicy
from dpq.client._tasks import TaskSet
from dpq.client.errors import ServerError

log = logging.getLogger("dpq.client")


class PollerFleet:
    """Runs one stream (or long-poll) per node; also points unary acks at the live nodes."""

    def __init__(self, channels: Channels, spec: PollSpec, held: Held, retry: RetryPolicy,
                 tasks: TaskSet, settle_endpoints: Endpoints, seeds: list[str],
                 deliver: Callable[[JobRecord], None],
                 fatal: Callable[[ServerError], None], streams: bool = True) -> None:
        self._channels = channels
        self._spec = spec
        self._held = held
        self._retry = retry
        self._tasks = tasks
        self._settle_endpoints = settle_endpoints
        self._seeds = seeds
        self._deliver = deliver
        self._fatal = fatal
        self._kind = NodeStream if streams else NodePoller
        self._pollers: dict[str, tuple[NodeStream | NodePoller, asyncio.Task[Any]]] = {}
        self._listed = asyncio.Event()  # the node list came at least once
        self.closed = False

    @property
    def addresses(self) -> list[str]:
        """The nodes polled now."""
        return list(self._pollers)

    def stream_for(self, address: str) -> NodeStream | None:
        """The open Consume stream to ``address``, if settlements can go on it now."""
        entry = self._pollers.get(address)
        if entry is not None and isinstance(entry[0], NodeStream) and entry[0].ready:
            return entry[0]
        return None

    def update(self, nodes: Nodes) -> None:
        """Poll exactly ``nodes``; the unreachable ones start with a backoff."""
        if self.closed:
            return
        self._listed.set()
        for address, reachable in nodes.items():
            if address in self._pollers:
                continue
            poller = self._kind(address, self._channels, self._spec, self._held, self._retry,
                                self._deliver, self._fatal)
            if not reachable:
                poller.suspect()
            log.debug("consuming from %s", address)
            self._pollers[address] = (poller, self._tasks.spawn(poller.run(), f"poll {address}"))
        for address in [a for a in self._pollers if a not in nodes]:
            log.info("node %s left the cluster: no longer polled", address)
            _, task = self._pollers.pop(address)
            task.cancel()
        live = [a for a, ok in nodes.items() if ok]
        # Settle at the first live node (the leader, when known): an ack it takes
        # is proposed there, with no forwarding hop through a gateway or follower.
        self._settle_endpoints.replace([*live, *(a for a in nodes if a not in live), *self._seeds],
                                       current=live[0] if live else None)

    async def first_round(self) -> None:
        """Return once the nodes are known and each answered its first round (what it had
        ready at once)."""
        await self._listed.wait()
        await asyncio.gather(*(p.answered.wait() for p, _ in list(self._pollers.values())))

    async def close(self) -> None:
        """Stop every stream and long-poll; jobs the nodes pushed meanwhile are delivered
        (for up to ``FINISH_S``), so that the consumer gives them back."""
        self.closed = True
        pollers, self._pollers = self._pollers, {}
        finishing = [task for poller, task in pollers.values()
                     if isinstance(poller, NodeStream) and poller.finish()]
        if finishing:
            await asyncio.wait(finishing, timeout=FINISH_S)
        await TaskSet.cancel(*(task for _, task in pollers.values()))
