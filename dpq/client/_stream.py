"""One long-lived ``EnqueueStream`` call: batches written in order, answers matched in order.

The server answers a stream's requests one at a time, in order, and ends the
stream with a status on the first request it cannot take. So when the stream
fails with ``INVALID_ARGUMENT`` or ``RESOURCE_EXHAUSTED``, the oldest
unanswered batch is the one refused, and the batches behind it were never
looked at: they fail with :class:`~dpq.client._retry.Retry` and are sent again
on a new stream. Any other failure leaves every unanswered batch in doubt
(it may have been enqueued), and each gets the error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from dpq.client._endpoints import Channels
from dpq.client._retry import Retry
from dpq.v1 import queue_pb2

_PER_REQUEST = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(eq=False)
class _Open:
    address: str
    call: grpc.aio.StreamStreamCall
    pending: deque[asyncio.Future[list[int]]] = field(default_factory=deque)
    reader: asyncio.Task[None] | None = None
    broken: bool = False


class EnqueueStream:
    """Sends Enqueue batches on one stream to the address asked for."""

    def __init__(self, channels: Channels) -> None:
        self._channels = channels
        self._open: _Open | None = None
        self._write_lock = asyncio.Lock()
        self._old: set[_Open] = set()

    async def send(self, address: str, request: queue_pb2.EnqueueRequest,
                   timeout: float) -> list[int]:
        """The job ids for ``request``; raises ``AioRpcError`` or ``Retry`` on failure."""
        async with self._write_lock:
            stream = self._stream_to(address)
            future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
            stream.pending.append(future)
            with contextlib.suppress(Exception):  # the call ended: its reader fails the future
                await stream.call.write(request)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            self._break(stream)
            raise Retry(f"EnqueueStream: no answer within {timeout}s", move_on=True) from None

    def _stream_to(self, address: str) -> _Open:
        current = self._open
        if current is not None and current.address == address and not current.broken:
            return current
        if current is not None and not current.broken:
            # The caller moved on; the old stream still answers what it was sent.
            self._old.add(current)
            asyncio.get_running_loop().create_task(self._finish(current))
        call = self._channels.stub(address).EnqueueStream()
        stream = self._open = _Open(address, call)
        stream.reader = asyncio.get_running_loop().create_task(self._read(stream))
        return stream

    async def _read(self, stream: _Open) -> None:
        try:
            while True:
                response = await stream.call.read()
                if response is grpc.aio.EOF:
                    self._fail(stream, lambda _: Retry("EnqueueStream ended", move_on=False))
                    return
                if stream.pending:
                    future = stream.pending.popleft()
                    if not future.done():
                        future.set_result(list(response.job_ids))
        except grpc.aio.AioRpcError as exc:
            error: grpc.aio.AioRpcError = exc
            if error.code() in _PER_REQUEST:
                self._fail(stream, lambda i: error if i == 0 else Retry(
                    "EnqueueStream: an earlier batch was refused; this one was not sent",
                    move_on=False))
            else:
                self._fail(stream, lambda _: error)
        except asyncio.CancelledError:
            self._fail(stream, lambda _: Retry("EnqueueStream closed", move_on=False))
            raise
        finally:
            stream.broken = True
            if self._open is stream:
                self._open = None

    @staticmethod
    def _fail(stream: _Open, error_for: Callable[[int], BaseException]) -> None:
        for i, future in enumerate(stream.pending):
            if not future.done():
                future.set_exception(error_for(i))
        stream.pending.clear()

    def _break(self, stream: _Open) -> None:
        self._fail(stream, lambda _: Retry("EnqueueStream cancelled", move_on=True))
        stream.broken = True
        stream.call.cancel()
        if self._open is stream:
            self._open = None

    async def _finish(self, stream: _Open) -> None:
        try:
            with contextlib.suppress(Exception):
                await stream.call.done_writing()
            if stream.reader is not None:
                await asyncio.wait([stream.reader], timeout=30)
        finally:
            self._break(stream)
            self._old.discard(stream)

    async def close(self) -> None:
        """Finish the open streams: answers still due are awaited (30 s at most)."""
        streams = [s for s in [self._open, *self._old] if s is not None]
        self._open = None
        await asyncio.gather(*(self._finish(s) for s in streams), return_exceptions=True)
