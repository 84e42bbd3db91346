"""Message counts per method (dpq.services.counting) on a real gRPC server, in process."""

from __future__ import annotations

import asyncio

import grpc

from dpq.services.server import Server
from dpq.v1 import queue_pb2, queue_pb2_grpc


class _Echo(queue_pb2_grpc.QueueServicer):
    async def Stats(self, request, context):
        if request.queue == "bad":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad")
        if request.queue == "bug":
            raise RuntimeError("a bug")
        return queue_pb2.StatsResponse()

    async def EnqueueStream(self, request_iterator, context):
        async for request in request_iterator:
            yield queue_pb2.EnqueueResponse(job_ids=[len(request.jobs)])


async def _exercise(unary_calls: int, stream_requests: int,
                    queues: tuple[str, ...] = ()) -> tuple[dict[str, float], dict]:
    servicer = _Echo()
    server = Server("127.0.0.1:0", [
        ("dpq.v1.Queue", lambda s: queue_pb2_grpc.add_QueueServicer_to_server(servicer, s))],
        extras=False)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = queue_pb2_grpc.QueueStub(channel)
            for _ in range(unary_calls):
                await stub.Stats(queue_pb2.StatsRequest())
            for queue in queues:
                try:
                    await stub.Stats(queue_pb2.StatsRequest(queue=queue))
                except grpc.aio.AioRpcError:
                    pass
            call = stub.EnqueueStream()
            for i in range(stream_requests):
                await call.write(queue_pb2.EnqueueRequest(jobs=[queue_pb2.NewJob()] * (i + 1)))
                answer = await call.read()
                assert list(answer.job_ids) == [i + 1]
            await call.done_writing()
            assert await call.code() == grpc.StatusCode.OK
        return server.messages.totals(), dict(server.messages.codes)
    finally:
        await server.stop(0)


def test_every_message_in_and_out_is_counted_once_per_method():
    totals, _ = asyncio.run(_exercise(unary_calls=3, stream_requests=4))
    assert totals == {
        "rpc.in.Queue/Stats": 3.0, "rpc.out.Queue/Stats": 3.0,
        "rpc.in.Queue/EnqueueStream": 4.0, "rpc.out.Queue/EnqueueStream": 4.0,
    }


def test_calls_with_one_response_are_counted_by_their_status_code():
    _, codes = asyncio.run(_exercise(unary_calls=2, stream_requests=1,
                                     queues=("bad", "bug", "bad")))
    assert codes == {("Queue/Stats", "OK"): 2, ("Queue/Stats", "INVALID_ARGUMENT"): 2,
                     ("Queue/Stats", "UNKNOWN"): 1}
