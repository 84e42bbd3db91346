"""Batching that follows the load: items submitted close together leave together.

How long a batch waits for company is the node proposer's rule
(:class:`dpq.cadence.Cadence`): with no batch in flight an item leaves at
once; while one is, the more batches have been leaving lately, the longer the
gap before the next one (2 ms at most), unless it is full first (``max_items``
items / ``max_bytes`` bytes); at most ``max_inflight`` batches are in flight.
Without the gap a steady trickle of items would leave one by one as fast as
the round trip allows, and the per-call cost (~0.3 ms of CPU on each side in
Python gRPC) would fill the machine at any rate.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from dpq.cadence import Cadence
from dpq.client.errors import DpqError

T = TypeVar("T")
R = TypeVar("R")

#: ``send(items)`` returns one result per item, in order; an exception instance
#: in the list fails that item alone. Raising fails the whole batch.
Send = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class Coalescer(Generic[T, R]):
    """Submit items one by one; they are sent in batches by ``send``."""

    def __init__(self, send: Send[T, R], *, max_items: int, max_inflight: int,
                 max_bytes: int | None = None, size: Callable[[T], int] | None = None,
                 cadence: Cadence | None = None) -> None:
        self._send = send
        self._max_items = max_items
        self._cadence = cadence if cadence is not None else Cadence()
        self._timer: asyncio.TimerHandle | None = None
        self._max_bytes = max_bytes
        self._size = size
        self._max_inflight = max_inflight
        self._pending: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._inflight: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue ``item``; the future gets its result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._pump()
        return future

    @property
    def busy(self) -> bool:
        """Whether items are queued or batches are in flight."""
        return bool(self._pending or self._inflight)

    async def drain(self) -> None:
        """Wait until everything submitted so far was answered."""
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    def _pump(self) -> None:
        if not self._pending:
            return
        full = len(self._pending) >= self._max_items
        if self._timer is not None:
            if not full:
                return
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        delay = self._cadence.delay(loop.time()) if self._inflight else 0.0
        if delay > 0 and not full:
            # Busy lately: let the next batch gather for a moment (see the module's doc).
            self._timer = loop.call_later(delay, self._lingered)
            return
        self._send_ready()

    def _lingered(self) -> None:
        self._timer = None
        self._send_ready()

    def _send_ready(self) -> None:
        while self._pending and len(self._inflight) < self._max_inflight:
            batch = self._take()
            if not batch:
                continue
            loop = asyncio.get_running_loop()
            self._cadence.sent(loop.time())
            task = loop.create_task(self._run(batch))
            self._inflight.add(task)
            task.add_done_callback(self._done)

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        total = 0
        while self._pending and len(batch) < self._max_items:
            item, future = self._pending[0]
            if future.done():  # cancelled by its caller before it was sent
                self._pending.popleft()
                continue
            weight = self._size(item) if self._size is not None else 0
            if batch and self._max_bytes is not None and total + weight > self._max_bytes:
                break
            batch.append(self._pending.popleft())
            total += weight
        return batch

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self._send([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every waiter must hear of it
            self._fail(batch, exc)
            return
        if len(results) != len(batch):
            self._fail(batch, DpqError(f"{len(results)} answers came for {len(batch)} requests"))
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    @staticmethod
    def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: BaseException) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._pump()
