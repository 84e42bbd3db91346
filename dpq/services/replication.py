"""The internal ``dpq.v1.Replication`` service: Paxos messages in, proposals to the leader."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from dpq.node import wire
from dpq.node.applier import results_to_pb
from dpq.node.driver import ReplicaDriver
from dpq.node.health import HealthReporter
from dpq.errors import ResourceExhausted
from dpq.node.proposer import LeaderRouter
from dpq.node.transport import Transport
from dpq.paxos.core import InvalidProposal, ProposalRefused
from dpq.paxos.types import proposal_problem
from dpq.v1 import replication_pb2, replication_pb2_grpc

log = logging.getLogger("dpq.services.replication")

DEFAULT_HEALTH_INTERVAL_MS = 250
#: (claimed sender, message kind) pairs already logged as malformed: one line each.
MAX_LOGGED_MALFORMED = 1024


class ReplicationServicer(replication_pb2_grpc.ReplicationServicer):
    def __init__(self, driver: ReplicaDriver, transport: Transport, router: LeaderRouter,
                 health: HealthReporter, admit: Callable[[bytes], None],
                 timeout_s: float = 5.0) -> None:
        self._driver = driver
        self._transport = transport
        self._router = router
        self._health = health
        self._admit = admit
        self._timeout_s = timeout_s
        self._node_id = transport.node_id
        self._peers = frozenset(transport.links)  # the other members
        self._logged: set[tuple[int | None, str]] = set()
        self.malformed_batches = 0

    async def Stream(self, request_iterator, context):
        async for batch in request_iterator:
            try:
                messages = wire.decode_batch(batch, node_id=self._node_id, peers=self._peers)
            except wire.MalformedMessage as exc:
                self._refused(exc)
                continue  # drop the batch, keep the stream
            if messages:
                self._transport.heard_from(messages[0].src)
                self._driver.deliver(messages)
        return replication_pb2.PeerAck()

    def _refused(self, exc: wire.MalformedMessage) -> None:
        """Count a dropped batch; log it once per claimed sender and kind (no flood)."""
        self.malformed_batches += 1
        key = (exc.src, exc.kind)
        if key in self._logged or len(self._logged) >= MAX_LOGGED_MALFORMED:
            return
        self._logged.add(key)
        log.error("dropped a peer batch claiming to come from node %s: %s (further %s "
                  "problems from it are not logged)", exc.src, exc, exc.kind)

    async def Propose(self, request, context):
        problem = proposal_problem(request.client_id, request.seq, 0)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Propose: {problem}")
        try:
            self._admit(request.batch)
        except ResourceExhausted as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        try:
            applied = await self._router.propose_local(request.client_id, request.seq,
                                                       request.batch, self._timeout_s)
        except InvalidProposal as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Propose: {exc}")
        except ProposalRefused as exc:
            leader = self._router.leader_address()
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"{exc}" + (f"; the leader is at {leader}" if leader else ""))
        except TimeoutError:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"not committed within {self._timeout_s}s: retry")
        return replication_pb2.ProposeResponse(
            slot=applied.slot, duplicate=applied.results is None,
            results=results_to_pb(applied.results))

    async def WatchHealth(self, request, context):
        interval_s = (request.interval_ms or DEFAULT_HEALTH_INTERVAL_MS) / 1000
        while True:
            yield self._health.report()
            await asyncio.sleep(interval_s)
