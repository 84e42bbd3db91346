"""The internal ``dpq.v1.Replication`` service: Paxos messages in, proposals to the leader."""

from __future__ import annotations

import grpc

from dpq.node import wire
from dpq.node.applier import results_to_pb
from dpq.node.driver import ReplicaDriver
from dpq.node.proposer import LeaderRouter
from dpq.node.transport import Transport
from dpq.paxos.core import ProposalRefused
from dpq.v1 import replication_pb2, replication_pb2_grpc


class ReplicationServicer(replication_pb2_grpc.ReplicationServicer):
    def __init__(self, driver: ReplicaDriver, transport: Transport, router: LeaderRouter,
                 timeout_s: float = 5.0) -> None:
        self._driver = driver
        self._transport = transport
        self._router = router
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
