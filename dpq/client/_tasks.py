"""Background tasks that cannot die quietly: a crash is logged and reported."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("dpq.client")


class TaskSet:
    """Owns a client's background tasks; ``on_crash`` hears of any that fails."""

    def __init__(self, on_crash: Callable[[BaseException], None]) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_crash = on_crash

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("dpq client task %s crashed: %r", task.get_name(), exc, exc_info=exc)
            self._on_crash(exc)

    @staticmethod
    async def cancel(*tasks: asyncio.Task[Any]) -> None:
        """Cancel ``tasks`` and wait until they are gone."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancel every task and wait until they are gone."""
        await self.cancel(*self._tasks)
