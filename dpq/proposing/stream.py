"""Proposals to one leader over one long-lived ``Replication/ProposeStream``.

A unary Propose per batch costs a gRPC call's setup and teardown on both ends
(~0.3-0.5 ms of CPU each in Python); on an open stream a proposal is one
message each way. :class:`ProposalStream` keeps one stream per leader channel:
:meth:`~ProposalStream.propose` queues the request on it and awaits the answer
that carries the same ``(client_id, seq)``; the leader answers as proposals
commit, in any order.

Failures look exactly as they do from unary Propose, so the proposer handles
one kind (``dpq.proposing.proposer``): a proposal the leader refused alone
(``ProposeResponse.error_code``) raises the ``grpc.aio.AioRpcError`` the unary
call would have raised; a stream that breaks fails every proposal waiting on it
with the stream's error, and the next call opens a new stream. The proposer
retries with the same ``(client_id, seq)``, which sessions make harmless, as
is a request that reached the leader twice.

A leader that does not serve ProposeStream (an older version, UNIMPLEMENTED)
gets unary Propose calls instead; the stream is tried again after
``retry_stream_s``, so a rolling upgrade ends on streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from dpq import clock as clocks
from dpq.v1 import replication_pb2, replication_pb2_grpc

#: How long a leader that answered UNIMPLEMENTED gets unary calls before the stream is retried.
RETRY_STREAM_S = 60.0

_CODES = {code.value[0]: code for code in grpc.StatusCode}
_CLOSED = object()


def status_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """The error a unary call ending with ``code`` and ``details`` raises."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class _Open:
    """One open stream: its call, the requests not yet sent, the answers awaited."""

    def __init__(self, stub: replication_pb2_grpc.ReplicationStub) -> None:
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.waiting: dict[tuple[str, int], asyncio.Future] = {}
        self.call = stub.ProposeStream(self._requests())
        self.reader = asyncio.create_task(self._read(), name="propose-stream")

    async def _requests(self) -> AsyncIterator[replication_pb2.ProposeRequest]:
        # The leader sends its headers at once (an old one its UNIMPLEMENTED):
        # nothing is written before, since a write racing the server's status
        # makes gRPC report INTERNAL instead of that status.
        await self.call.initial_metadata()
        if self.call.done():
            return
        while True:
            request = await self.outbox.get()
            if request is _CLOSED:
                return
            future = self.waiting.get((request.client_id, request.seq))
            if future is not None and not future.done():  # nobody waits: not worth sending
                yield request

    async def _read(self) -> None:
        error = status_error(grpc.StatusCode.UNAVAILABLE,
                             "the leader ended the proposal stream: retry")
        try:
            async for response in self.call:
                future = self.waiting.pop((response.client_id, response.seq), None)
                if future is None or future.done():
                    continue  # its caller gave up (timeout); a retry is on its way
                if response.error_code:
                    code = _CODES.get(response.error_code, grpc.StatusCode.UNKNOWN)
                    future.set_exception(status_error(code, response.error))
                else:
                    future.set_result(response)
        except grpc.aio.AioRpcError as exc:
            error = exc
        except asyncio.CancelledError:
            error = status_error(grpc.StatusCode.CANCELLED, "the proposal stream was closed")
            raise
        finally:
            self.fail(error)

    def fail(self, error: BaseException) -> None:
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        self.outbox.put_nowait(_CLOSED)
        self.call.cancel()
        self.reader.cancel()


class ProposalStream:
    """Proposals to the leader behind one ``stub``, over one stream at a time."""

    def __init__(self, stub: replication_pb2_grpc.ReplicationStub, *,
                 retry_stream_s: float = RETRY_STREAM_S,
                 clock: clocks.Clock = clocks.monotonic) -> None:
        self._stub = stub
        self._open: _Open | None = None
        self._retry_stream_s = retry_stream_s
        self._clock = clock
        self._unary_until: float | None = None  # while set: the leader serves no stream
        #: Streams opened (the first, and one after each failure); for tests and counters.
        self.opened = 0

    async def propose(self, request: replication_pb2.ProposeRequest,
                      timeout_s: float) -> replication_pb2.ProposeResponse:
        """The leader's answer to ``request``; raises as unary Propose would
        (``grpc.aio.AioRpcError``), or ``TimeoutError`` after ``timeout_s``.

        One call per ``(client_id, seq)`` at a time (a proposer retries a batch
        only after its previous try failed)."""
        if self._unary_until is not None and self._clock() >= self._unary_until:
            self._unary_until = None
        if self._unary_until is None:
            try:
                return await self._on_stream(request, timeout_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                self._unary_until = self._clock() + self._retry_stream_s
        return await self._stub.Propose(request, timeout=timeout_s)

    async def _on_stream(self, request: replication_pb2.ProposeRequest,
                         timeout_s: float) -> replication_pb2.ProposeResponse:
        stream = self._open
        if stream is None or stream.reader.done():
            stream = self._open = _Open(self._stub)
            self.opened += 1
        key = (request.client_id, request.seq)
        future = asyncio.get_running_loop().create_future()
        stream.waiting[key] = future
        stream.outbox.put_nowait(request)
        try:
            return await asyncio.wait_for(future, timeout_s)
        finally:
            if stream.waiting.get(key) is future:
                del stream.waiting[key]

    def close(self) -> None:
        """End the open stream (its waiting proposals fail as CANCELLED)."""
        if self._open is not None:
            self._open.close()
            self._open = None
