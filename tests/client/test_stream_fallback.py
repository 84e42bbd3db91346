"""The client's Consume stream against a toy node on a real in-process gRPC server.

The toy serves the public Queue API through the real ``QueueServicer`` from a
few jobs in memory: with Consume it pushes within the credits and answers acks
on the stream; without (as a gateway) Consume is UNIMPLEMENTED and the client
must long-poll with Dequeue. Real nodes: test_consume_stream.py.
"""

from __future__ import annotations

import asyncio

import grpc

from dpq.client import AsyncConsumer
from dpq.client._held import Held
from dpq.errors import Unimplemented
from dpq.services.queue import QueueServicer
from dpq.v1 import queue_pb2, queue_pb2_grpc

JOBS = 25


class ToyNode:
    """The QueueOperations of a node holding ``JOBS`` ready jobs."""

    def __init__(self, streams: bool) -> None:
        self.streams = streams
        self.ready = [queue_pb2.Job(job_id=i, queue="q", priority=3, attempt=1, receipt=i)
                      for i in range(1, JOBS + 1)]
        self.acked_on_stream: list[int] = []
        self.acked_by_rpc: list[int] = []
        self.most_outstanding = 0
        self.dequeues = 0

    async def dequeue(self, request):
        self.dequeues += 1
        taken, self.ready = self.ready[:request.max_jobs], self.ready[request.max_jobs:]
        if not taken:
            await asyncio.sleep(request.wait_ms / 1000)
        return taken

    async def ack(self, refs):
        self.acked_by_rpc += [r.job_id for r in refs]
        return [""] * len(refs)

    def consume(self, requests):
        if not self.streams:
            raise Unimplemented("no Consume here")
        return self._consume(requests)

    async def _consume(self, requests):
        credits = 0
        async for request in requests:
            credits += request.credits
            self.most_outstanding = max(self.most_outstanding, credits)
            if request.HasField("ack"):
                self.acked_on_stream += [r.job_id for r in request.ack.jobs]
                yield queue_pb2.ConsumeResponse(
                    request_id=request.request_id,
                    results=[queue_pb2.RefResult(job_id=r.job_id, ok=True)
                             for r in request.ack.jobs])
            push, self.ready = self.ready[:credits], self.ready[credits:]
            credits -= len(push)
            if push or request.HasField("open"):
                yield queue_pb2.ConsumeResponse(jobs=push)


async def consume_all(node: ToyNode) -> list[int]:
    server = grpc.aio.server()
    queue_pb2_grpc.add_QueueServicer_to_server(QueueServicer(node), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    got: list[int] = []
    try:
        async with AsyncConsumer(f"127.0.0.1:{port}", queue="q", discover=False, wait=0.2,
                                 max_jobs=4) as consumer:
            async for job in consumer:
                got.append(job.id)
                await job.ack()
                if len(got) == JOBS:
                    break
    finally:
        await server.stop(0)
    return got


def test_the_consumer_takes_jobs_within_its_credits_and_acks_on_the_stream():
    node = ToyNode(streams=True)
    got = asyncio.run(consume_all(node))
    assert sorted(got) == list(range(1, JOBS + 1))
    assert node.dequeues == 0
    assert node.most_outstanding <= 4  # never more credits than max_jobs on one stream
    assert sorted(node.acked_on_stream + node.acked_by_rpc) == list(range(1, JOBS + 1))
    assert len(node.acked_on_stream) >= JOBS - 4  # the last ones may go after the stream ends


def test_a_server_without_consume_is_long_polled():
    node = ToyNode(streams=False)
    got = asyncio.run(consume_all(node))
    assert sorted(got) == list(range(1, JOBS + 1))
    assert node.dequeues >= JOBS // 4
    assert sorted(node.acked_by_rpc) == list(range(1, JOBS + 1))


def test_top_up_grants_room_like_reserve_and_bigger_steps_when_credits_remain():
    async def main():
        held = Held(capacity=10)
        assert held.top_up(max_jobs=4, have=0) == 4  # as reserve(4)
        assert held.top_up(max_jobs=4, have=4) == 0  # a stream holds at most max_jobs
        assert held.top_up(max_jobs=8, have=4, at_least=4) == 4
        assert held.top_up(max_jobs=8, have=0) == 2  # the room left
        assert held.top_up(max_jobs=8, have=0) == 1  # a stream with none always gets one
        assert held.top_up(max_jobs=8, have=1) == 0  # … but no more
        held.unreserve(11)
        assert held.top_up(max_jobs=8, have=0) == 8
    asyncio.run(main())
