"""One node's long-poll loop: Dequeue while there is room, hand the jobs on.

A node serves only the jobs it owns, so a consumer runs one of these per node.
A node that fails is retried with exponential backoff (and jitter); the other
nodes' loops are not affected. The first Dequeue does not wait: it takes
what the node has ready now, so that a consumer starting on a backlog sees
every node's jobs (and orders them) before it settles into long-polls;
``answered`` is set once that first round is over. A status no retry can fix (``INVALID_ARGUMENT``
for a bad queue name, ``UNIMPLEMENTED``, …) ends the loop and is reported.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from dpq.client._endpoints import Channels
from dpq.client._held import Held, JobRecord
from dpq.client._retry import RetryPolicy
from dpq.client.errors import ServerError, server_error
from dpq.v1 import queue_pb2

log = logging.getLogger("dpq.client")

FATAL = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED,
                   grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED})

#: Beyond the long-poll's wait, how long a Dequeue may take: the node may need
#: a new leader before its Lease commits (its proposer gives up after 15 s).
#: Cancelling a Dequeue whose Lease is committing would strand the jobs until
#: their lease runs out, so this is generous.
DEQUEUE_MARGIN_S = 20.0
IDLE_S = 0.05


@dataclass(frozen=True, slots=True)
class PollSpec:
    """What every long-poll of a consumer asks for."""

    queue: str
    max_jobs: int
    wait_s: float
    lease_s: float
    max_hold_s: float
    consumer_id: str

    def request(self, n: int, wait: bool = True) -> queue_pb2.DequeueRequest:
        """A Dequeue for up to ``n`` jobs (a long-poll unless ``wait`` is False)."""
        wait_ms = max(0, round(self.wait_s * 1000)) if wait else 0
        return queue_pb2.DequeueRequest(queue=self.queue, max_jobs=n, wait_ms=wait_ms,
                                        lease_ms=max(1, round(self.lease_s * 1000)),
                                        consumer_id=self.consumer_id)


class NodePoller:
    """Long-polls one node for as long as it runs."""

    def __init__(self, address: str, channels: Channels, spec: PollSpec, held: Held,
                 retry: RetryPolicy, deliver: Callable[[JobRecord], None],
                 fatal: Callable[[ServerError], None]) -> None:
        self.address = address
        self._channels = channels
        self._spec = spec
        self._held = held
        self._retry = retry
        self._deliver = deliver
        self._fatal = fatal
        self.failures = 0
        # Set after the first Dequeue answered or failed (or at once for a
        # suspect node): what the node had ready then is delivered.
        self.answered = asyncio.Event()

    def suspect(self) -> None:
        """The cluster says the node is unreachable: begin with a backoff, as if it had failed."""
        self.failures = max(self.failures, 1)
        self.answered.set()  # not worth waiting for

    async def run(self) -> None:
        """Poll until cancelled (or a fatal status)."""
        try:
            await self._poll()
        finally:
            self.answered.set()

    async def _poll(self) -> None:
        spec, held = self._spec, self._held
        if self.failures:
            await asyncio.sleep(self._retry.backoff(self.failures - 1))
        while True:
            await held.wait_for_room()
            n = held.reserve(spec.max_jobs)
            sent = held.clock()
            first = not self.answered.is_set()
            try:
                response = await self._channels.stub(self.address).Dequeue(
                    spec.request(n, wait=not first), timeout=spec.wait_s + DEQUEUE_MARGIN_S)
            except grpc.aio.AioRpcError as exc:
                held.unreserve(n)
                self.answered.set()
                if exc.code() in FATAL:
                    self._fatal(server_error(exc.code(), exc.details() or "", "Dequeue",
                                             self.address))
                    return
                await self._back_off(exc)
                continue
            except BaseException:
                held.unreserve(n)
                raise
            if self.failures:
                log.info("node %s answers long-polls again", self.address)
            self.failures = 0
            records = [JobRecord(pb, self.address, sent + spec.lease_s, sent + spec.max_hold_s,
                                 pb.lease_expires_at_us) for pb in response.jobs]
            held.receive(n, records)
            for record in records:
                self._deliver(record)
            self.answered.set()
            if not records and not first and held.clock() - sent < min(spec.wait_s, IDLE_S):
                await asyncio.sleep(IDLE_S)  # an early empty answer: do not spin

    async def _back_off(self, exc: grpc.aio.AioRpcError, what: str = "long-poll on") -> None:
        self.failures += 1
        delay = self._retry.backoff(self.failures - 1)
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        log.log(level, "%s %s failed with %s (%s); retry %d in %.2fs", what, self.address,
                exc.code().name, exc.details(), self.failures, delay)
        await asyncio.sleep(delay)
