"""How every client class ends: ``close()``, and ``with`` / ``async with`` calling it.

The asyncio classes (``AsyncProducer``, ``AsyncConsumer``, ``AsyncAdmin``) define
``close``; :class:`AsyncClient` gives them ``async with``. The blocking classes
(``Producer``, ``Consumer``, ``Admin``) run their async twin on a private loop
thread; :class:`BlockingClient` closes the twin there, then the thread.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from dpq.client._loop import LoopThread
from dpq.client.errors import ClientClosedError


class AsyncClient:
    """``async with`` closes the client (a subclass defines ``close``)."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


class BlockingClient:
    """What every blocking class (``Producer``, ``Consumer``, ``Admin``) does at its end:
    close its async twin on the loop thread, then the thread; usable as a context manager.
    A subclass sets ``_loop`` and ``_async``."""

    _loop: LoopThread
    _async: Any

    def close(self) -> None:
        """Close the connections and the loop thread."""
        try:
            self._loop.run(self._async.close())
        except ClientClosedError:
            pass
        finally:
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
