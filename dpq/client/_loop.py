"""A private asyncio event loop on a daemon thread, which the sync classes drive.

The client is written once, for asyncio (grpc.aio keeps a long-poll open on
every node at once without a thread per node). ``Producer`` and ``Consumer``
run that same code here and wait for its results, so the sync and async
clients cannot drift apart. The thread is a daemon so a client someone forgot
to close never keeps the interpreter alive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from dpq.client.errors import ClientClosedError

T = TypeVar("T")

#: How often a blocked sync call wakes to let signal handlers run.
WAKE_S = 0.1


class LoopThread:
    """An event loop running forever on its own thread until :meth:`close`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._closed = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; a thread-safe future of its result."""
        if self._closed:
            coro.close()
            raise ClientClosedError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result.

        If the wait is interrupted (``KeyboardInterrupt``, a timeout), the
        coroutine is cancelled.
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync dpq client was called from its own event loop thread "
                               "(from an async callback); use the async client there")
        future = self.submit(coro)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            # Wake up now and then: a signal that lands on another thread (gRPC
            # has several) only runs its Python handler once the main thread
            # runs bytecode, and a plain blocking wait would never let it.
            while not future.done():
                left = WAKE_S if deadline is None else min(WAKE_S, deadline - time.monotonic())
                if left <= 0:
                    raise concurrent.futures.TimeoutError()
                concurrent.futures.wait([future], timeout=left)
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Call ``fn(*args)`` on the loop thread (from any thread, or a signal handler)."""
        if not self._closed:
            self.loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        """Stop the loop after cancelling what still runs on it; join the thread."""
        if self._closed:
            return
        if threading.current_thread() is self._thread:
            raise RuntimeError("a sync dpq client cannot be closed from its own loop thread")
        try:
            asyncio.run_coroutine_threadsafe(self._cancel_all(), self.loop).result(10)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass
        self._closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()

    async def _cancel_all(self) -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.loop.shutdown_asyncgens()

