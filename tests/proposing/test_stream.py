"""The proposal stream's client (dpq.proposing.stream) against real gRPC servers in process.

Each server here plays a leader with a scripted ``Replication`` servicer: one that
answers out of order, one that breaks the stream, one that serves only unary
Propose (an older node).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import pytest

from dpq.proposing.stream import ProposalStream
from dpq.v1 import replication_pb2 as pb
from dpq.v1 import replication_pb2_grpc

WAIT_S = 10.0


def request(seq: int, client_id: str = "node-2-test") -> pb.ProposeRequest:
    return pb.ProposeRequest(client_id=client_id, seq=seq, batch=b"")


def run(servicer, body: Callable[[ProposalStream], Awaitable[None]], **options) -> None:
    """Run ``body`` with a ProposalStream (``options``) to a real server of ``servicer``."""
    asyncio.run(_serving(servicer, body, options))


async def _serving(servicer, body, options) -> None:
    server = grpc.aio.server()
    if isinstance(servicer, UnaryOnly):  # serves Propose alone, as a node of an older version
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "dpq.v1.Replication", {"Propose": grpc.unary_unary_rpc_method_handler(
                servicer.Propose, request_deserializer=pb.ProposeRequest.FromString,
                response_serializer=pb.ProposeResponse.SerializeToString)})])
    else:
        replication_pb2_grpc.add_ReplicationServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stream = ProposalStream(replication_pb2_grpc.ReplicationStub(channel), **options)
    try:
        await body(stream)
    finally:
        stream.close()
        await channel.close()
        await server.stop(None)


class Reversing(replication_pb2_grpc.ReplicationServicer):
    """Holds proposals until it has ``batch`` of them, then answers them last first;
    seq 13 is refused alone with RESOURCE_EXHAUSTED."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.streams = 0

    async def ProposeStream(self, request_iterator, context):
        await context.send_initial_metadata(())
        self.streams += 1
        held = []
        async for req in request_iterator:
            held.append(req)
            if len(held) == self.batch:
                for r in reversed(held):
                    if r.seq == 13:
                        yield pb.ProposeResponse(
                            client_id=r.client_id, seq=r.seq, error="over the budget",
                            error_code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
                    else:
                        yield pb.ProposeResponse(client_id=r.client_id, seq=r.seq,
                                                 slot=100 + r.seq)
                held = []


def test_answers_out_of_order_reach_the_proposal_they_answer():
    servicer = Reversing(batch=4)

    async def body(stream: ProposalStream) -> None:
        answers = await asyncio.wait_for(asyncio.gather(
            *(stream.propose(request(seq), WAIT_S) for seq in (1, 2, 3, 4))), WAIT_S)
        assert [(a.seq, a.slot) for a in answers] == [(1, 101), (2, 102), (3, 103), (4, 104)]
        # the same seq from two proposers (client ids) on one stream: matched by both
        a, b, _, _ = await asyncio.wait_for(asyncio.gather(
            stream.propose(request(5, "gateway-a"), WAIT_S),
            stream.propose(request(5, "gateway-b"), WAIT_S),
            stream.propose(request(6), WAIT_S), stream.propose(request(7), WAIT_S)), WAIT_S)
        assert (a.client_id, b.client_id) == ("gateway-a", "gateway-b")
        # one proposal refused alone: the error unary Propose would raise; the others stand
        results = await asyncio.wait_for(asyncio.gather(
            *(stream.propose(request(seq), WAIT_S) for seq in (11, 12, 13, 14)),
            return_exceptions=True), WAIT_S)
        refused = results[2]
        assert isinstance(refused, grpc.aio.AioRpcError)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.details() == "over the budget"
        assert [r.slot for i, r in enumerate(results) if i != 2] == [111, 112, 114]
        assert stream.opened == 1 and servicer.streams == 1  # all on one stream

    run(servicer, body)


class Breaking(replication_pb2_grpc.ReplicationServicer):
    """Answers nothing; a request with seq 99 ends its stream UNAVAILABLE. Streams
    after the first answer everything at once."""

    def __init__(self) -> None:
        self.streams = 0
        self.received: list[int] = []
        self.three_received = asyncio.Event()

    async def ProposeStream(self, request_iterator, context):
        await context.send_initial_metadata(())
        self.streams += 1
        first = self.streams == 1
        async for req in request_iterator:
            self.received.append(req.seq)
            if len(self.received) >= 3:
                self.three_received.set()
            if req.seq == 99:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the leader went away")
            if not first:
                yield pb.ProposeResponse(client_id=req.client_id, seq=req.seq, slot=req.seq)


def test_a_broken_stream_fails_every_pending_proposal_and_the_next_call_reopens():
    servicer = Breaking()

    async def body(stream: ProposalStream) -> None:
        pending = [asyncio.ensure_future(stream.propose(request(seq), WAIT_S))
                   for seq in (1, 2, 3)]
        # all three reached the leader, unanswered
        await asyncio.wait_for(servicer.three_received.wait(), WAIT_S)
        results = await asyncio.wait_for(asyncio.gather(
            *pending, stream.propose(request(99), WAIT_S), return_exceptions=True), WAIT_S)
        assert all(isinstance(r, grpc.aio.AioRpcError) for r in results), results
        assert {r.code() for r in results} == {grpc.StatusCode.UNAVAILABLE}
        assert {r.details() for r in results} == {"the leader went away"}
        # the proposer retries the same seqs: a new stream carries them
        again = await asyncio.wait_for(asyncio.gather(
            *(stream.propose(request(seq), WAIT_S) for seq in (1, 2, 3))), WAIT_S)
        assert [a.slot for a in again] == [1, 2, 3]
        assert stream.opened == 2 and servicer.streams == 2

    run(servicer, body)


def test_a_proposal_not_answered_in_time_times_out_and_its_late_answer_is_dropped():
    class Slow(replication_pb2_grpc.ReplicationServicer):
        def __init__(self) -> None:
            self.release = asyncio.Event()

        async def ProposeStream(self, request_iterator, context):
            await context.send_initial_metadata(())
            async for req in request_iterator:
                if req.seq == 1:
                    await self.release.wait()  # answers 1 only once 2 was asked
                yield pb.ProposeResponse(client_id=req.client_id, seq=req.seq, slot=req.seq)

    servicer = Slow()

    async def body(stream: ProposalStream) -> None:
        with pytest.raises(TimeoutError):
            await stream.propose(request(1), 0.05)
        servicer.release.set()
        answer = await asyncio.wait_for(stream.propose(request(2), WAIT_S), WAIT_S)
        assert answer.slot == 2 and stream.opened == 1

    run(servicer, body)


class UnaryOnly:
    """A node from before ProposeStream: Propose only."""

    def __init__(self) -> None:
        self.unary = 0

    async def Propose(self, request, context):
        self.unary += 1
        if request.seq == 13:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad batch")
        return pb.ProposeResponse(slot=200 + request.seq)


def test_a_leader_without_the_stream_gets_unary_calls():
    servicer = UnaryOnly()

    async def body(stream: ProposalStream) -> None:
        answers = await asyncio.wait_for(asyncio.gather(
            *(stream.propose(request(seq), WAIT_S) for seq in (1, 2, 3))), WAIT_S)
        assert [a.slot for a in answers] == [201, 202, 203]
        assert servicer.unary == 3
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stream.propose(request(13), WAIT_S)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await stream.propose(request(4), WAIT_S)).slot == 204
        assert stream.opened == 1  # tried once, not once per call

    run(servicer, body)


def test_the_stream_is_tried_again_after_a_while_on_unary():
    now = [0.0]
    servicer = UnaryOnly()

    async def body(stream: ProposalStream) -> None:
        await stream.propose(request(1), WAIT_S)
        now[0] = 29.0
        await stream.propose(request(2), WAIT_S)
        assert stream.opened == 1
        now[0] = 31.0
        await stream.propose(request(3), WAIT_S)
        assert stream.opened == 2 and servicer.unary == 3

    run(servicer, body, retry_stream_s=30.0, clock=lambda: now[0])
