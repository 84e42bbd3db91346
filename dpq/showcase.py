"""``dpq up --demo``: priorities and aging at work on a live cluster.

A backlog of every priority is enqueued, then a flood of priority-1 jobs
arrives faster than the consumers can take them. Without aging, the
priority-5 jobs would wait until the flood ends; with it (the demo runs the
nodes with a 500 ms aging step) a waiting job's effective priority improves
with its wait, so every priority keeps moving. The display shows, live, how
many jobs of each priority are done and how long they waited.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from typing import TextIO

from dpq.client import AsyncConsumer, AsyncJob, AsyncProducer, JobSpec

QUEUE = "demo"
BACKLOG_PER_PRIORITY = 100
FLOOD_SECONDS = 6.0
FLOOD_EVERY_S = 0.1
FLOOD_JOBS = 30  # priority-1 jobs per FLOOD_EVERY_S: more than the consumers take
HANDLER_S = 0.02
CONCURRENCY = 4
#: The nodes of ``dpq up --demo`` run with this aging step (see dpq.up).
AGING_STEP_MS = 500


class Tally:
    def __init__(self) -> None:
        self.enqueued = [0] * 5
        self.waits: list[list[float]] = [[] for _ in range(5)]
        self.during_flood = [0] * 5
        self.flood_end = float("inf")

    def line(self) -> str:
        parts = []
        for p in range(5):
            done = len(self.waits[p])
            waits = self.waits[p]
            recent = statistics.median(waits[-50:]) if waits else 0.0
            parts.append(f"p{p + 1} {done:5d}/{self.enqueued[p]:<5d} wait~{recent:4.1f}s")
        return " | ".join(parts)


async def _flow(gateway: str, nodes: list[str], tally: Tally, out: TextIO,
                stop: threading.Event, tls_dir: str | None = None) -> None:
    async with AsyncProducer(gateway, tls_dir=tls_dir) as producer:
        backlog = [JobSpec(payload=f"{time.time()}", priority=p, queue=QUEUE)
                   for p in range(1, 6) for _ in range(BACKLOG_PER_PRIORITY)]
        await producer.enqueue_many(backlog)
        for p in range(5):
            tally.enqueued[p] += BACKLOG_PER_PRIORITY

        async def handle(job: AsyncJob) -> None:
            await asyncio.sleep(HANDLER_S)  # the "work"
            tally.waits[job.priority - 1].append(time.time() - float(job.payload))
            if time.monotonic() < tally.flood_end:
                tally.during_flood[job.priority - 1] += 1

        consumer = AsyncConsumer(nodes, queue=QUEUE, wait=1.0, max_jobs=20, lease=30.0,
                                 tls_dir=tls_dir)
        running = asyncio.create_task(consumer.run(handle, concurrency=CONCURRENCY,
                                                   handle_signals=False))
        flood_end = tally.flood_end = time.monotonic() + FLOOD_SECONDS
        next_show = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now < flood_end:
                await producer.enqueue_many(
                    [JobSpec(payload=f"{time.time()}", priority=1, queue=QUEUE)] * FLOOD_JOBS)
                tally.enqueued[0] += FLOOD_JOBS
            elif sum(map(len, tally.waits)) >= sum(tally.enqueued):
                break
            if now >= next_show:
                print(f"\r{tally.line()}", end="", file=out, flush=True)
                next_show = now + 0.25
            await asyncio.sleep(FLOOD_EVERY_S)
        print(f"\r{tally.line()}", file=out, flush=True)
        consumer.stop()
        await running
        await consumer.close()


def run(gateway: str, nodes: list[str], *, out: TextIO = sys.stdout,
        stop: threading.Event | None = None, tls_dir: str | None = None) -> None:
    """``tls_dir``: the cluster's TLS folder (``dpq up --tls``), None for plaintext."""
    tally = Tally()
    print(f"\nDemo: {BACKLOG_PER_PRIORITY} jobs of each priority, then a flood of priority-1 "
          f"jobs for {FLOOD_SECONDS:.0f}s, faster than {CONCURRENCY} consumers can take them.\n"
          f"Aging step {AGING_STEP_MS} ms: a waiting job gains one priority level every "
          f"{AGING_STEP_MS} ms, so priority 5 is not starved.\n", file=out, flush=True)
    asyncio.run(_flow(gateway, nodes, tally, out, stop or threading.Event(), tls_dir))
    print("\npriority   jobs   done during the flood   median wait   max wait", file=out)
    for p in range(5):
        waits = tally.waits[p]
        if waits:
            print(f"   {p + 1}     {len(waits):6d}   {tally.during_flood[p]:21d}   "
                  f"{statistics.median(waits):9.2f}s  {max(waits):8.2f}s", file=out)
    print(f"\n{tally.during_flood[4]} priority-5 jobs were served while priority-1 jobs kept "
          "arriving faster than they could be taken: that is aging. Without it they would "
          "all have waited for the flood to end.", file=out, flush=True)
