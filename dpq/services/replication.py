"""The internal ``dpq.v1.Replication`` service, on the peer port only: Paxos
messages in, proposals to the leader, health reports out.

Who may say what (in ``--insecure`` mode too):

* Stream: batches from this cluster's other nodes only (``Transport.receive``);
  anything else ends the stream with PERMISSION_DENIED.
* Propose: a caller presenting this cluster's id is a node and may propose any
  command; a caller without one (a gateway) only Enqueue commands; a wrong id
  is PERMISSION_DENIED.
* ProposeStream: every proposal on it is checked exactly as Propose checks one
  (:meth:`ReplicationServicer.propose` serves both) and answered when it
  commits; a refusal other than PERMISSION_DENIED is answered in that
  proposal's ProposeResponse (``error_code``, ``error``) and the stream goes on,
  while PERMISSION_DENIED ends the stream with the status Propose answers.

Under mutual TLS (``mutual_tls``), the verified certificate decides as well:

* Stream: every batch's ``sender`` must be the node the caller's certificate
  names (``dpq.security.auth.node_mismatch``), else PERMISSION_DENIED before
  anything in it is looked at;
* Propose and ProposeStream: only a node certificate that also presents this cluster's id may
  propose any command; a gateway certificate may propose only Enqueue, as a
  caller without the id.

(The peer port's :class:`~dpq.security.auth.PeerRoleInterceptor` already keeps
certificates other than node and gateway ones off every method, and all but
node ones off Stream.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

import grpc
from google.protobuf.message import DecodeError

from dpq import logs
from dpq.errors import QueueError
from dpq.paxos.core import InvalidProposal, ProposalRefused
from dpq.paxos.messages import Message
from dpq.paxos.types import proposal_problem
from dpq.proposing.results import Applied, results_to_pb
from dpq.queue.validate import InvalidArgument
from dpq.security import auth
from dpq.security.cluster_id import OnceLog, fingerprint, same_cluster
from dpq.security.identity import Role
from dpq.services.pipelined import answered_as_completed
from dpq.v1 import log_pb2, replication_pb2, replication_pb2_grpc

log = logging.getLogger("dpq.services.replication")

DEFAULT_HEALTH_INTERVAL_MS = 250
#: The only command a caller without the cluster id (a gateway) may propose.
GATEWAY_KINDS = frozenset({"enqueue"})
#: Proposals of one ProposeStream being committed at once; past it the stream is not
#: read (a proposer keeps a few batches in flight, and their retries).
DEFAULT_STREAM_INFLIGHT = 64


class PeerRefused(Exception):
    """A whole peer batch refused (another cluster, an unknown sender); the message says why."""


# What the servicer needs of a node, structurally (the node's objects named in
# each docstring implement them; the servicer imports nothing from dpq.node).

class PeerInbox(Protocol):
    """Paxos traffic from peers, checked (``dpq.node.transport.Transport``)."""

    refused_batches: int

    def receive(self, batch: replication_pb2.PeerBatch) -> list[Any]:
        """The batch's messages (snapshot pieces still in parts), or :class:`PeerRefused`."""
        ...

    async def finish(self, received: list[Any]) -> list[Message]:
        """``received`` ready for the replica (snapshots joined off the loop)."""
        ...


class MessageSink(Protocol):
    """Where received Paxos messages go (``dpq.node.driver.ReplicaDriver``)."""

    def deliver(self, messages: Iterable[Message]) -> None: ...


class LocalProposer(Protocol):
    """The leader's side of Propose (``dpq.node.router.LeaderRouter``)."""

    async def propose_local(self, client_id: str, seq: int, batch: bytes,
                            timeout_s: float) -> Applied: ...

    def leader_address(self) -> str | None: ...


class HealthSource(Protocol):
    """This node's health for WatchHealth (``dpq.node.health.HealthReporter``)."""

    def report(self) -> replication_pb2.NodeHealthReport: ...


class Refused(Exception):
    """A proposal refused or not committed: the status and message its caller gets."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Caller(NamedTuple):
    """A Propose caller: its IP (for the log) and what its verified certificate says it
    is (``role``, ``node_id``: mutual TLS only, else None)."""

    ip: str
    role: Role | None
    node_id: int | None


def authorize(request: replication_pb2.ProposeRequest, cluster_id: str,
              role: Role | None = None, node_id: int | None = None) -> log_pb2.CommandBatch:
    """The decoded batch, if this caller may propose it; else :class:`Refused`.

    ``role`` and ``node_id``: what the caller's verified certificate says it is
    (mutual TLS); None in plaintext, where the cluster id alone tells a node. A
    node certificate leases only the jobs of the node it names: a stolen key of
    one node cannot lease (and then ack) another node's jobs."""
    if request.cluster_id and not same_cluster(request.cluster_id, cluster_id):
        raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                      "Replication/Propose: ProposeRequest.cluster_id is not this cluster's")
    if role not in (None, "node", "gateway"):
        raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                      f"Replication/Propose is for node and gateway certificates, not {role}")
    node = bool(request.cluster_id) and role in (None, "node")
    try:
        batch = log_pb2.CommandBatch.FromString(request.batch)
    except DecodeError:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                      f"Replication/Propose: ProposeRequest.batch ({len(request.batch)} bytes) "
                      "is not a CommandBatch") from None
    if not node:
        for i, command in enumerate(batch.commands):
            kind = command.WhichOneof("kind")
            if kind not in GATEWAY_KINDS:
                raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                              f"Replication/Propose: command {i} is {kind or 'empty'}; a caller "
                              "without the cluster id or a node certificate (a gateway) may "
                              "propose only enqueue")
    elif node_id is not None:
        for i, command in enumerate(batch.commands):
            if command.HasField("lease") and command.lease.node != node_id:
                raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                              f"Replication/Propose: command {i} leases for node "
                              f"{command.lease.node}, but the certificate is node {node_id}'s")
    return batch


class ReplicationServicer(replication_pb2_grpc.ReplicationServicer):
    def __init__(self, driver: MessageSink, transport: PeerInbox, router: LocalProposer,
                 health: HealthSource, admit: Callable[[log_pb2.CommandBatch], object], *,
                 cluster_id: str,
                 mutual_tls: bool = False, timeout_s: float = 5.0,
                 stream_inflight: int = DEFAULT_STREAM_INFLIGHT) -> None:
        self._driver = driver
        self._transport = transport
        self._router = router
        self._health = health
        self._admit = admit
        self._cluster_id = cluster_id
        self._mutual_tls = mutual_tls
        self._timeout_s = timeout_s
        self._stream_inflight = stream_inflight
        self._refusals = OnceLog(log)
        self.refused_proposals = 0

    async def Stream(self, request_iterator, context):
        presented = auth.peer_identity(context) if self._mutual_tls else None
        async for batch in request_iterator:
            if self._mutual_tls:
                await self._check_sender(presented, batch.sender, context)
            try:
                received = self._transport.receive(batch)
            except PeerRefused as exc:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"Replication/Stream: {exc}")
            if received:
                # A snapshot received in pieces is joined off the loop; this stream's
                # later batches wait for it, so the driver sees them in order.
                self._driver.deliver(await self._transport.finish(received))
        return replication_pb2.PeerAck()

    async def _check_sender(self, presented, sender: int, context) -> None:
        """A batch claiming node ``sender`` ends the stream unless the certificate is its."""
        reason = auth.node_mismatch(presented, sender)
        if reason is None:
            return
        self._transport.refused_batches += 1
        self._refusals.warn(("certificate", str(presented), sender),
                            "refused peer traffic from %s: %s (logged once per source)",
                            logs.client_ip(context.peer()), reason)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                            f"Replication/Stream: PeerBatch.sender {sender}: {reason}")

    def check(self, request: replication_pb2.ProposeRequest,
              role: Role | None = None, node_id: int | None = None) -> log_pb2.CommandBatch:
        """Who may propose what, then whether what they propose is valid; :class:`Refused`."""
        batch = authorize(request, self._cluster_id, role, node_id)
        # Every field of every command is checked next, for nodes and gateways
        # alike, by the node's admit (dpq.queue.validate.commands).
        return batch

    def caller(self, context) -> Caller:
        """Who is calling, as far as the peer port can tell (once per call or stream)."""
        role, node_id = None, None
        if self._mutual_tls:
            presented = auth.peer_identity(context)
            # The role interceptor lets only node and gateway certificates this far.
            role = presented.role if presented is not None else "client"
            node_id = presented.node_id if presented is not None else None
        return Caller(logs.client_ip(context.peer()), role, node_id)

    async def propose(self, request: replication_pb2.ProposeRequest,
                      caller: Caller) -> replication_pb2.ProposeResponse:
        """One proposal, for Propose and ProposeStream alike: checked (who may propose
        what, then whether it is valid), committed, answered; else :class:`Refused`
        with the status and message the caller is told."""
        problem = proposal_problem(request.client_id, request.seq, 0)
        if problem is not None:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"Replication/Propose: {problem}")
        try:
            batch = self.check(request, caller.role, caller.node_id)
        except Refused as exc:
            self.refused_proposals += 1
            presented = fingerprint(request.cluster_id) if request.cluster_id else "none"
            self._refusals.warn((presented, caller.ip),
                                "refused a proposal from %s (cluster %s): %s (logged once per "
                                "source)", caller.ip, presented, exc)
            raise
        try:
            # checked like public requests (dpq.queue.validate.commands)
            self._admit(batch)
        except InvalidArgument as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"Replication/Propose: {exc}") from None
        except QueueError as exc:  # over the budget; PostgreSQL too far behind for new jobs
            # str, not details(): the proposer reads POSTGRES_BEHIND at the start of it
            raise Refused(exc.code, str(exc)) from None
        try:
            applied = await self._router.propose_local(request.client_id, request.seq,
                                                       request.batch, self._timeout_s)
        except InvalidProposal as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"Replication/Propose: {exc}") from None
        except ProposalRefused as exc:
            leader = self._router.leader_address()
            raise Refused(grpc.StatusCode.UNAVAILABLE,
                          f"{exc}" + (f"; the leader is at {leader}" if leader else "")) from None
        except TimeoutError:
            raise Refused(grpc.StatusCode.UNAVAILABLE,
                          f"not committed within {self._timeout_s}s: retry") from None
        return replication_pb2.ProposeResponse(
            slot=applied.slot, duplicate=applied.results is None,
            results=results_to_pb(applied.results))

    async def Propose(self, request, context):
        try:
            return await self.propose(request, self.caller(context))
        except Refused as exc:
            await context.abort(exc.code, str(exc))

    async def ProposeStream(self, request_iterator, context):
        # Headers at once: the proposer writes nothing before them
        # (dpq.proposing.stream), so it tells an old leader's UNIMPLEMENTED apart.
        await context.send_initial_metadata(())
        caller = self.caller(context)

        async def answer(request: replication_pb2.ProposeRequest):
            try:
                response = await self.propose(request, caller)
            except Refused as exc:
                if exc.code == grpc.StatusCode.PERMISSION_DENIED:
                    raise  # a caller that may not propose this: the stream ends, as Propose
                response = replication_pb2.ProposeResponse(error_code=exc.code.value[0],
                                                           error=str(exc))
            response.client_id, response.seq = request.client_id, request.seq
            return response

        try:
            async for response in answered_as_completed(request_iterator, answer,
                                                        max_inflight=self._stream_inflight):
                yield response
        except Refused as exc:
            await context.abort(exc.code, str(exc))

    async def WatchHealth(self, request, context):
        interval_s = (request.interval_ms or DEFAULT_HEALTH_INTERVAL_MS) / 1000
        while True:
            yield self._health.report()
            await asyncio.sleep(interval_s)
