"""The event-loop stall meter: what it records, and its rate-limited warning."""

from __future__ import annotations

import asyncio
import logging
import time

from dpq.node.loopwatch import LoopWatch


def test_a_blocked_loop_is_measured_at_least_as_long_as_the_block_minus_one_interval():
    watch = LoopWatch(interval_s=0.005)

    async def scenario() -> None:
        task = asyncio.create_task(watch.run())
        await asyncio.sleep(0.02)  # the watch is asleep on its timer now
        time.sleep(0.1)  # noqa: ASYNC251 - holds the loop on purpose: the timer fires ≥ 95 ms late
        await asyncio.sleep(0.02)
        task.cancel()

    asyncio.run(scenario())
    assert watch.max_stall_ms >= 100 - 5, watch.max_stall_ms


def test_stalls_over_the_threshold_are_counted_and_logged_at_most_once_per_period(caplog):
    watch = LoopWatch(warn_ms=200, warn_every_s=10)
    with caplog.at_level(logging.WARNING, logger="dpq.node.loop"):
        watch.note(50, now=0.0)  # short: no line
        watch.note(250, now=1.0)  # the first long one: a line
        watch.note(300, now=2.0)  # within 10 s of it: counted, no line
        watch.note(220, now=12.0)  # 11 s later: a line that counts both
    assert watch.max_stall_ms == 300
    assert watch.long_stalls == 3
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("event loop stalled 250 ms (1 stall(s) over 200 ms")
    assert "event loop stalled 220 ms (2 stall(s) over 200 ms" in lines[1]
    assert "the longest 300 ms" in lines[1]
