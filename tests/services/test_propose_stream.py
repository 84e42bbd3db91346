"""ProposeStream refuses exactly what Propose refuses, with the same status and message.

The real ``ReplicationServicer`` on a real gRPC server in process (with the
decoding interceptor every dpq server has); the leader behind it is a stand-in
that commits at once or, for some client ids, fails as a leader can. Each
proposal is sent both ways: as a unary Propose, and through the proposer's own
stream client (``dpq.proposing.stream``), which must raise the error the unary
call raised.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from dpq.errors import ResourceExhausted, Unavailable
from dpq.paxos.core import NotLeader
from dpq.proposing.proposer import POSTGRES_BEHIND
from dpq.proposing.results import Applied
from dpq.proposing.stream import ProposalStream
from dpq.queue import validate
from dpq.queue.results import Enqueued
from dpq.services.decoding import DecodingInterceptor
from dpq.services.limits import DEFAULT_LIMITS
from dpq.services.replication import ReplicationServicer
from dpq.v1 import log_pb2, queue_pb2, replication_pb2_grpc
from dpq.v1 import replication_pb2 as pb

CLUSTER = "c0ffee" * 5 + "00"
WAIT_S = 10.0
MEMBERS = frozenset({1, 2, 3})


class Leader:
    """The leader's side of a proposal: commits at once (slot 100 + seq), except for
    client ids ``not-leader`` (it lost the leadership) and ``slow`` (no quorum in time)."""

    def __init__(self) -> None:
        self.committed: list[tuple[str, int]] = []

    async def propose_local(self, client_id, seq, batch, timeout_s):
        if client_id == "not-leader":
            raise NotLeader(3)
        if client_id == "slow":
            raise TimeoutError
        self.committed.append((client_id, seq))
        commands = log_pb2.CommandBatch.FromString(batch).commands
        return Applied(100 + seq, [Enqueued((seq,)) for _ in commands])

    def leader_address(self):
        return "127.0.0.1:7001"


def admit(batch: log_pb2.CommandBatch) -> None:
    """The node's admit, reduced: validity, then the budget and PostgreSQL's lag by queue name."""
    validate.commands(batch, validate.Limits(), MEMBERS)
    for command in batch.commands:
        for job in command.enqueue.jobs:
            if job.queue == "full":
                raise ResourceExhausted("the queue is over its memory budget")
            if job.queue == "lagging":
                raise Unavailable(f"{POSTGRES_BEHIND} by 9000 slots", None)


def enqueue(queue: str = "q") -> bytes:
    return log_pb2.CommandBatch(commands=[log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
        jobs=[queue_pb2.NewJob(queue=queue, priority=1, payload=b"x")], owners=[1]))]
    ).SerializeToString()


def ack() -> bytes:
    return log_pb2.CommandBatch(commands=[log_pb2.Command(ack=log_pb2.AckCommand(
        jobs=[queue_pb2.JobRef(job_id=1, attempt=1)]))]).SerializeToString()


def proposal(seq: int, batch: bytes, client_id: str = "node-2-x",
             cluster_id: str = CLUSTER) -> pb.ProposeRequest:
    return pb.ProposeRequest(client_id=client_id, seq=seq, batch=batch, cluster_id=cluster_id)


#: Refused alone: answered in the proposal's ProposeResponse, the stream stays open.
ANSWERED = {
    "seq out of range": proposal(2**63, enqueue()),
    "client_id too long": proposal(1, enqueue(), client_id="c" * 300),
    "not a CommandBatch": proposal(2, b"\xff\xff\xff\xff"),
    "invalid command": proposal(3, enqueue("a\nb")),
    "over the budget": proposal(4, enqueue("full")),
    "PostgreSQL behind": proposal(5, enqueue("lagging")),
    "not the leader": proposal(6, enqueue(), client_id="not-leader"),
    "not committed in time": proposal(7, enqueue(), client_id="slow"),
}
#: Refused for who the caller is: the stream ends, as the Propose call does.
ENDING = {
    "another cluster's id": proposal(1, enqueue(), cluster_id="f" * 32),
    "a gateway proposing an ack": proposal(1, ack(), client_id="gateway-x", cluster_id=""),
}


async def _serving(body) -> None:
    leader = Leader()
    servicer = ReplicationServicer(None, None, leader, None, admit, cluster_id=CLUSTER)
    server = grpc.aio.server(interceptors=[DecodingInterceptor(DEFAULT_LIMITS.limit_for)])
    replication_pb2_grpc.add_ReplicationServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        await body(replication_pb2_grpc.ReplicationStub(channel), servicer, leader)
    finally:
        await channel.close()
        await server.stop(None)


async def _unary(stub, request) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Propose(request, timeout=WAIT_S)
    return info.value


def test_a_proposal_refused_alone_is_answered_on_the_stream_as_propose_refuses_it():
    async def body(stub, servicer, leader):
        expected = {name: await _unary(stub, request) for name, request in ANSWERED.items()}
        codes = {name: e.code() for name, e in expected.items()}
        assert codes == {
            "seq out of range": grpc.StatusCode.INVALID_ARGUMENT,
            "client_id too long": grpc.StatusCode.INVALID_ARGUMENT,
            "not a CommandBatch": grpc.StatusCode.INVALID_ARGUMENT,
            "invalid command": grpc.StatusCode.INVALID_ARGUMENT,
            "over the budget": grpc.StatusCode.RESOURCE_EXHAUSTED,
            "PostgreSQL behind": grpc.StatusCode.UNAVAILABLE,
            "not the leader": grpc.StatusCode.UNAVAILABLE,
            "not committed in time": grpc.StatusCode.UNAVAILABLE,
        }
        assert expected["invalid command"].details().startswith(
            "Replication/Propose: commands[0].enqueue.jobs[0].queue")
        assert expected["PostgreSQL behind"].details().startswith(POSTGRES_BEHIND)

        stream = ProposalStream(stub)
        try:
            # every refusal and a good proposal, at once, on one stream
            good = proposal(8, enqueue())
            results = await asyncio.wait_for(asyncio.gather(
                *(stream.propose(r, WAIT_S) for r in [*ANSWERED.values(), good]),
                return_exceptions=True), WAIT_S)
            for (name, unary), got in zip(expected.items(), results):
                assert isinstance(got, grpc.aio.AioRpcError), (name, got)
                assert (got.code(), got.details()) == (unary.code(), unary.details()), name
            assert (results[-1].slot, results[-1].seq, results[-1].error_code) == (108, 8, 0)
            assert stream.opened == 1  # none of them ended the stream
        finally:
            stream.close()
        # counted alike: the batch that is not a CommandBatch, once per path
        assert servicer.refused_proposals == 2

    asyncio.run(_serving(body))


def test_a_caller_that_may_not_propose_it_ends_the_stream_as_propose_ends_the_call():
    async def body(stub, servicer, leader):
        for name, request in ENDING.items():
            unary = await _unary(stub, request)
            assert unary.code() == grpc.StatusCode.PERMISSION_DENIED, name
            stream = ProposalStream(stub)
            try:
                first = await stream.propose(proposal(40, enqueue()), WAIT_S)
                assert first.slot == 140
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await stream.propose(request, WAIT_S)
                assert (ended.value.code(), ended.value.details()) == (
                    unary.code(), unary.details()), name
                # the next proposal opens a new stream
                again = await stream.propose(proposal(41, enqueue()), WAIT_S)
                assert again.slot == 141 and stream.opened == 2
            finally:
                stream.close()
        gateway = await _unary(stub, ENDING["a gateway proposing an ack"])
        assert "only enqueue" in gateway.details()
        assert servicer.refused_proposals == 2 * len(ENDING) + 1  # counted alike
        assert ("gateway-x", 1) not in leader.committed

    asyncio.run(_serving(body))
