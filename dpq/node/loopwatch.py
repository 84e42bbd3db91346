"""How long the node's event loop was blocked: the lag of a short periodic sleep.

A task sleeps ``interval_s`` again and again and records how late it woke. A
callback that holds the loop (a snapshot dumped on it, a big apply batch, a
blocking call) delays every timer, so the lateness bounds the stall from below
(it can miss at most ``interval_s`` of it: the part that fell inside the sleep).
The largest stall since start goes to ``ClusterInfo`` (``max_loop_stall_ms``)
and the health report; a stall longer than ``warn_ms`` gets one WARNING line,
at most one every ``warn_every_s`` (the line counts the ones in between).

Cost: one timer every ``interval_s`` (a few µs each: well under 1 % of a core
at 5 ms). uvloop's timers have millisecond resolution, so a stall under ~1 ms
is noise.
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger("dpq.node.loop")

INTERVAL_S = 0.005
WARN_MS = 200.0
WARN_EVERY_S = 10.0


class LoopWatch:
    def __init__(self, interval_s: float = INTERVAL_S, warn_ms: float = WARN_MS,
                 warn_every_s: float = WARN_EVERY_S) -> None:
        self.interval_s = interval_s
        self.warn_ms = warn_ms
        self.warn_every_s = warn_every_s
        #: The largest stall seen since start, in milliseconds.
        self.max_stall_ms = 0.0
        #: Stalls longer than ``warn_ms`` since start.
        self.long_stalls = 0
        self._unreported = 0  # long stalls since the last WARNING line
        self._worst_unreported = 0.0
        self._last_warning = float("-inf")

    def note(self, stall_ms: float, now: float) -> None:
        """Record one measured stall (``now``: the loop's clock, seconds)."""
        self.max_stall_ms = max(self.max_stall_ms, stall_ms)
        if stall_ms <= self.warn_ms:
            return
        self.long_stalls += 1
        self._unreported += 1
        self._worst_unreported = max(self._worst_unreported, stall_ms)
        if now - self._last_warning >= self.warn_every_s:
            log.warning("event loop stalled %.0f ms (%d stall(s) over %.0f ms since the last "
                        "line, the longest %.0f ms; longest since start %.0f ms)",
                        stall_ms, self._unreported, self.warn_ms, self._worst_unreported,
                        self.max_stall_ms)
            self._last_warning = now
            self._unreported = 0
            self._worst_unreported = 0.0

    async def run(self) -> None:
        # The wall clock, not loop.time(): uvloop's is whole milliseconds, cached per turn.
        clock, interval = time.monotonic, self.interval_s
        while True:
            start = clock()
            await asyncio.sleep(interval)
            now = clock()
            self.note(max(0.0, (now - start - interval) * 1000.0), now)
