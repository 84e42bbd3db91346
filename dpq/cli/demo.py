"""dpq's one demo, two ways: ``dpq demo`` (no cluster) and ``dpq up --demo`` (a live one).

``dpq demo`` (:func:`tour`) is a one-minute tour of the compiled hot paths, the
aging heap and the balancer: it drives the same objects a node and a gateway
use, on a simulated clock, and prints what they decide.

``dpq up --demo`` (:func:`run`) shows priorities and aging at work on a live
cluster. A backlog of every priority is enqueued, then a flood of priority-1 jobs
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
from collections import Counter
from typing import TextIO

from dpq._fastheap import FastHeap
from dpq._wrr import SmoothWRR
from dpq.client import AsyncConsumer, AsyncJob, AsyncProducer, JobSpec
from dpq.gateway.balancer import NodeHealth, weights

QUEUE = "demo"
BACKLOG_PER_PRIORITY = 100
FLOOD_SECONDS = 6.0
FLOOD_EVERY_S = 0.1
FLOOD_JOBS = 30  # priority-1 jobs per FLOOD_EVERY_S: more than the consumers take
HANDLER_S = 0.02
CONCURRENCY = 4
#: The nodes of ``dpq up --demo`` run with this aging step (see dpq.cli.up).
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


# -- dpq demo: the hot paths on a simulated clock ------------------------------

MS = 1000  # microseconds


def heap_tour() -> None:
    print("== the per-node heap: priority first, FIFO within a priority, aging for the rest ==")
    heap = FastHeap(aging_step_us=500 * MS)  # one priority level = 500 ms of waiting
    heap.push(1, 5, enqueued_at_us=0)  # a low-priority job at t=0
    heap.push(99, 1, enqueued_at_us=0, due_at_us=1_500 * MS)  # urgent, delayed to t=1.5 s
    arrivals = {job_id: (job_id - 1) * 400 * MS for job_id in range(2, 8)}  # urgent, every 400 ms
    for job_id, at in arrivals.items():
        if at <= 1_000 * MS:
            heap.push(job_id, 1, enqueued_at_us=at)
    early = list(heap.pop_many(1, 1_000 * MS))
    for job_id, at in arrivals.items():
        if at > 1_000 * MS:
            heap.push(job_id, 1, enqueued_at_us=at)
    rest = list(heap.pop_many(10, 3_000 * MS))
    print("  t=0: #1 (priority 5) and #99 (priority 1, delayed to t=1.5 s);")
    print("  priority-1 jobs #2..#7 arrive every 400 ms from t=0.4 s")
    print("  a consumer polling at t=1.0 s for one job gets:", " ".join(f"#{j}" for j in early))
    print("  the next poll, at t=3.0 s, gets:", " ".join(f"#{j}" for j in rest))
    print("  #1 ranks as if it had come at t=2.0 s (4 levels x 500 ms), so it overtakes")
    print("  the priority-1 jobs from t=2.0 s on (#6, #7): nothing starves. #99 waited")
    print("  in the delay heap until t=1.5 s.\n")


def balancer_tour() -> None:
    print("== the gateway's balancer: live health -> weights -> smooth round-robin ==")
    reports = [
        NodeHealth(node_id=1, cpu_percent=20, ready_depth=10, consume_rate=500),
        NodeHealth(node_id=2, cpu_percent=15, ready_depth=0, consume_rate=800, waiting_consumers=4),
        NodeHealth(node_id=3, cpu_percent=95, ready_depth=40_000, consume_rate=300),
        NodeHealth(node_id=4, reachable=False),
    ]
    ids, ws = weights(reports)
    wrr = SmoothWRR(ids, ws)
    picks = wrr.pick_many(1000)
    share = Counter(picks)
    for report, w in zip(reports, ws):
        why = (
            "unreachable" if not report.reachable
            else f"cpu {report.cpu_percent:.0f}%, {report.ready_depth} ready, "
                 f"{report.consume_rate:.0f} jobs/s, {report.waiting_consumers} waiting"
        )
        print(f"  node {report.node_id}: weight {w:5d}  "
              f"{share[report.node_id] / 10:5.1f}% of jobs  ({why})")
    print("  first picks:", " ".join(str(n) for n in picks[:20]), "...")


def tour() -> None:
    """``dpq demo``: the heap, then the balancer; no cluster needed."""
    heap_tour()
    balancer_tour()


if __name__ == "__main__":
    tour()
