"""The internal ``dpq.v1.Replication`` service: Paxos messages in, proposals to the leader."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from dpq.node import wire
from dpq.node.applier import results_to_pb
from dpq.node.driver import ReplicaDriver
from dpq.node.health import HealthReporter
from dpq.errors import ResourceExhausted
from dpq.node.proposer import LeaderRouter
from dpq.node.transport import Transport
from dpq.paxos.core import ProposalRefused
from dpq.queue.validate import InvalidArgument
from dpq.v1 import replication_pb2, replication_pb2_grpc


DEFAULT_HEALTH_INTERVAL_MS = 250


class ReplicationServicer(replication_pb2_grpc.ReplicationServicer):
    def __init__(self, driver: ReplicaDriver, transport: Transport, router: LeaderRouter,
                 health: HealthReporter, admit: Callable[[bytes], object],
                 timeout_s: float = 5.0) -> None:
        self._driver = driver
        self._transport = transport
        self._router = router
        self._health = health
        self._admit = admit
        self._timeout_s = timeout_s

    async def Stream(self, request_iterator, context):
        async for batch in request_iterator:
            messages = wire.decode_batch(batch)
            if messages:
                self._transport.heard_from(messages[0].src)
                self._driver.deliver(messages)
        return replication_pb2.PeerAck()

    async def Propose(self, request, context):
        try:
            # decoded and checked like public requests (dpq.queue.validate.proposal)
            self._admit(request.batch)
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Propose: {exc}")
        except ResourceExhausted as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        try:
            applied = await self._router.propose_local(request.client_id, request.seq,
                                                       request.batch, self._timeout_s)
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
