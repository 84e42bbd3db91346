"""pyperf benchmark: the compiled priority heap against its pure-Python twin.

    python bench/bench_fastheap.py                   # full run (a few minutes)
    python bench/bench_fastheap.py --fast            # quicker, noisier
    python bench/bench_fastheap.py -o heap.json      # keep the numbers; the ratio
                                                     # table is printed at the end
    python bench/bench_fastheap.py --report heap.json    # the table of a saved run

Every benchmark pushes then pops the same 1,000,000 jobs: ids 1..N, random
priorities 1..5 and random increasing enqueue times (seed 2, prepared before
timing), aging step 5 s, popped once all are ready:

* ``fastheap per-item``  -- ``FastHeap.push`` x N then ``FastHeap.pop`` x N
* ``fastheap batch``     -- one ``push_many`` then one ``pop_many``
* ``fastheap push_many`` / ``fastheap pop_many`` -- the two halves of the batch
* ``twin per-item``      -- ``dpq.queue.heap.PyHeap`` (heapq), the same per-item loop
* ``heapq tuples``       -- bare ``heapq`` on ``(key, seq, id)`` tuples, for scale

Targets (issue 2): per-item >= 5x the twin; batch >= 12x the twin's per-item loop.
"""

from __future__ import annotations

import functools
import random
import sys
from array import array
from heapq import heappop, heappush

import pyperf

from dpq._fastheap import FastHeap
from dpq.queue.heap import PyHeap

JOBS = 1_000_000
STEP_US = 5_000_000
SEED = 2

# (faster, slower, target): "faster" runs time(slower) / time(faster) times as fast
TARGETS = [
    ("fastheap per-item", "twin per-item", 5.0),
    ("fastheap batch", "twin per-item", 12.0),
    ("fastheap per-item", "heapq tuples", None),
    ("fastheap batch", "heapq tuples", None),
    ("twin per-item", "heapq tuples", None),
]


def cpu_model() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def jobs():
    """The work, built once per process (pyperf workers each build their own)."""
    rng = random.Random(SEED)
    ids = list(range(1, JOBS + 1))
    prios = [rng.randint(1, 5) for _ in range(JOBS)]
    times, t = [], 1_700_000_000_000_000
    for _ in range(JOBS):
        t += rng.randint(0, 10)
        times.append(t)
    end = t + 60_000_000  # every job ready
    return ids, prios, times, end, array("Q", ids), array("b", prios), array("q", times)


def per_item(loops: int, impl) -> float:
    ids, prios, times, end, *_ = jobs()
    total = 0.0
    for _ in range(loops):
        heap = impl(STEP_US)
        push, pop = heap.push, heap.pop
        t0 = pyperf.perf_counter()
        for job_id, prio, t in zip(ids, prios, times):
            push(job_id, prio, t)
        for _ in range(JOBS):
            pop(end)
        total += pyperf.perf_counter() - t0
        assert len(heap) == 0
    return total


def batch(loops: int, part: str = "both") -> float:
    *_, end, ids, prios, times = jobs()
    total = 0.0
    for _ in range(loops):
        heap = FastHeap(STEP_US)
        if part == "pop":  # fill untimed
            heap.push_many(ids, prios, times)
        t0 = pyperf.perf_counter()
        if part != "pop":
            heap.push_many(ids, prios, times)
        if part != "push":
            heap.pop_many(JOBS, end)
        total += pyperf.perf_counter() - t0
        assert len(heap) == (JOBS if part == "push" else 0)
    return total


def plain_heapq(loops: int) -> float:
    ids, prios, times, *_ = jobs()
    total = 0.0
    for _ in range(loops):
        heap: list[tuple[int, int, int]] = []
        t0 = pyperf.perf_counter()
        for seq, (job_id, prio, t) in enumerate(zip(ids, prios, times)):
            heappush(heap, (t + (prio - 1) * STEP_US, seq, job_id))
        for _ in range(JOBS):
            heappop(heap)
        total += pyperf.perf_counter() - t0
    return total


def report(benches: dict[str, pyperf.Benchmark], out=sys.stdout) -> None:
    import os
    import platform

    print(file=out)
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        file=out,
    )
    print(f"{'benchmark (1M jobs)':<22} {'median':>10} {'stdev':>9}  jobs/s", file=out)
    for name, bench in benches.items():
        med = bench.median()
        print(
            f"{name:<22} {med * 1e3:8.1f} ms {bench.stdev() * 1e3:6.1f} ms  "
            f"{JOBS / med / 1e6:5.2f} M",
            file=out,
        )
    print(file=out)
    for fast, slow, target in TARGETS:
        if fast in benches and slow in benches:
            ratio = benches[slow].median() / benches[fast].median()
            verdict = (
                ""
                if target is None
                else (f"  target >= {target:g}x: {'met' if ratio >= target else 'MISSED'}")
            )
            print(f"{fast + ' over ' + slow:<40} {ratio:6.1f}x{verdict}", file=out)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        suite = pyperf.BenchmarkSuite.load(sys.argv[2])
        report({b.get_name(): b for b in suite.get_benchmarks()})
        return

    # One value is 0.2-4 s of work; 5 processes x 3 values keep a full run to
    # a few minutes (--fast: 3 x 2).
    runner = pyperf.Runner(processes=5, values=3, warmups=1)
    runner.metadata["description"] = "dpq FastHeap vs PyHeap vs heapq, 1M jobs push then pop"
    runner.metadata["jobs"] = JOBS
    runner.metadata["aging_step_us"] = STEP_US
    benches = {
        "fastheap per-item": runner.bench_time_func("fastheap per-item", per_item, FastHeap),
        "fastheap batch": runner.bench_time_func("fastheap batch", batch),
        "fastheap push_many": runner.bench_time_func("fastheap push_many", batch, "push"),
        "fastheap pop_many": runner.bench_time_func("fastheap pop_many", batch, "pop"),
        "twin per-item": runner.bench_time_func("twin per-item", per_item, PyHeap),
        "heapq tuples": runner.bench_time_func("heapq tuples", plain_heapq),
    }
    if not runner.args.worker and all(b is not None for b in benches.values()):
        report(benches)


if __name__ == "__main__":
    main()
