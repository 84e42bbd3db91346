"""Answering a stream of requests concurrently, each answer sent as soon as it is ready.

A bidirectional stream that answered its requests one at a time would be no
better than unary calls: a proposal waits for its Paxos slot to commit, and the
next one must not wait behind it. :func:`answered_as_completed` runs one task
per request (at most ``max_inflight`` at once: past that it stops reading, and
gRPC's flow control holds the sender back) and yields the answers in the order
they complete, so the caller matches them by a key the answer carries.

An exception from ``answer`` (or from reading the requests) ends the whole
stream with it, after the other tasks are cancelled; a handler that wants one
request refused without ending the stream returns an answer that says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

Request = TypeVar("Request")
Answer = TypeVar("Answer")


class _Failed:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_READ_ALL = object()


async def answered_as_completed(requests: AsyncIterator[Request],
                                answer: Callable[[Request], Awaitable[Answer]], *,
                                max_inflight: int) -> AsyncIterator[Answer]:
    """``answer(request)`` for each request, yielded as each completes.

    Requests are started in the order they arrive (a handler's synchronous
    checks therefore run in order). Ends once the requests end and every
    answer has been yielded."""
    if max_inflight < 1:
        raise ValueError(f"max_inflight {max_inflight}: must be at least 1")
    ready: asyncio.Queue = asyncio.Queue()
    slots = asyncio.Semaphore(max_inflight)
    tasks: set[asyncio.Task] = set()

    async def one(request: Request) -> None:
        try:
            ready.put_nowait(await answer(request))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the stream, which ends with it
            ready.put_nowait(_Failed(exc))
        finally:
            slots.release()

    async def read() -> int:
        started = 0
        try:
            async for request in requests:
                await slots.acquire()
                task = asyncio.create_task(one(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                started += 1
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - e.g. the decoding check's abort
            ready.put_nowait(_Failed(exc))
        ready.put_nowait(_READ_ALL)
        return started

    reader = asyncio.create_task(read())
    answered = 0
    try:
        while not (reader.done() and answered == reader.result()):
            item = await ready.get()
            if item is _READ_ALL:
                continue
            if isinstance(item, _Failed):
                raise item.exc
            answered += 1
            yield item
    finally:
        reader.cancel()
        for task in list(tasks):
            task.cancel()
