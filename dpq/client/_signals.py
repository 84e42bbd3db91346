"""SIGINT/SIGTERM during ``run()``: the first asks for a graceful stop, the next one hurries it.

Signal handlers can only be set from the main thread; elsewhere this does
nothing (call ``stop()`` yourself). The previous handlers come back after.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(stop: Callable[[bool], None],
                    loop: asyncio.AbstractEventLoop | None = None) -> Iterator[None]:
    """Call ``stop(now)`` on each SIGINT/SIGTERM while inside: ``now`` is False
    the first time, True after.

    ``loop``: an event loop running in this (main) thread, to call ``stop`` on
    it; without one, ``stop`` runs in a plain Python signal handler.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen = 0

    def on_signal(*_: object) -> None:
        nonlocal seen
        seen += 1
        stop(seen > 1)

    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    try:
        for sig in SIGNALS:
            if loop is not None:
                loop.add_signal_handler(sig, on_signal)
            else:
                signal.signal(sig, on_signal)
        yield
    finally:
        for sig, handler in previous.items():
            if loop is not None:
                loop.remove_signal_handler(sig)
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
