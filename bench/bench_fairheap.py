"""pyperf benchmark: what fair shares cost per push+pop against the plain heap.

    python bench/bench_fairheap.py                  # full run (a few minutes)
    python bench/bench_fairheap.py --fast           # quicker, noisier
    python bench/bench_fairheap.py -o fair.json     # keep the numbers
    python bench/bench_fairheap.py --report fair.json   # the table of a saved run

(with dpq installed; in a checkout built in place, ``PYTHONPATH=. python bench/…``, or the
installed build is what is measured).

Every benchmark pushes then pops the same 100,000 jobs: ids 1..N, random
priorities 1..5, random increasing enqueue times (seed 2, prepared before
timing), aging step 5 s, popped once all are ready, so every tenant with a job
left is at the best level and competes on every pop (the worst case for the
tenant scan):

* ``fastheap per-item``   -- ``FastHeap.push`` x N then ``FastHeap.pop`` x N
* ``fairheap T tenants``  -- ``FairHeap.push(..., tenant)`` x N then ``pop`` x N, the
  jobs spread over T tenants (random, seed 3), T = 1, 10, 1000
* ``... pop_many``        -- the same pushes, then one ``pop_many``

Target (issue 16): fairness under 2x the plain heap per push+pop.  Under 16
backlogged tenants a pop scans them; from 16 on it picks through the level
groups, O(log T) amortised; the table says what that costs.
"""

from __future__ import annotations

import functools
import os
import platform
import random
import sys

import pyperf

from dpq._fastheap import FairHeap, FastHeap

JOBS = 100_000
STEP_US = 5_000_000
TENANTS = (1, 10, 1000)


def cpu_model() -> str:
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
    rng = random.Random(2)
    ids = list(range(1, JOBS + 1))
    prios = [rng.randint(1, 5) for _ in range(JOBS)]
    times, t = [], 1_700_000_000_000_000
    for _ in range(JOBS):
        t += rng.randint(0, 10)
        times.append(t)
    return ids, prios, times, t + 60_000_000


@functools.cache
def tenants_of(count: int) -> list[int]:
    rng = random.Random(3)
    return [rng.randrange(count) for _ in range(JOBS)]


def plain(loops: int, many: bool) -> float:
    ids, prios, times, end = jobs()
    total = 0.0
    for _ in range(loops):
        heap = FastHeap(STEP_US)
        push, pop = heap.push, heap.pop
        t0 = pyperf.perf_counter()
        for job_id, prio, t in zip(ids, prios, times):
            push(job_id, prio, t)
        if many:
            heap.pop_many(JOBS, end)
        else:
            for _ in range(JOBS):
                pop(end)
        total += pyperf.perf_counter() - t0
        assert len(heap) == 0
    return total


def fair(loops: int, count: int, many: bool) -> float:
    ids, prios, times, end = jobs()
    owners = tenants_of(count)
    total = 0.0
    for _ in range(loops):
        heap = FairHeap(STEP_US)
        push, pop = heap.push, heap.pop
        t0 = pyperf.perf_counter()
        for job_id, prio, t, tenant in zip(ids, prios, times, owners):
            push(job_id, prio, t, 0, tenant)
        if many:
            heap.pop_many(JOBS, end)
        else:
            for _ in range(JOBS):
                pop(end)
        total += pyperf.perf_counter() - t0
        assert len(heap) == 0
    return total


def report(benches: dict[str, pyperf.Benchmark], out=sys.stdout) -> None:
    print(file=out)
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        file=out,
    )
    print(f"{'benchmark (100k jobs)':<34} {'median':>9} {'per job':>9}  vs plain", file=out)
    for name, bench in benches.items():
        base = benches["fastheap pop_many" if "pop_many" in name else "fastheap per-item"]
        ratio = bench.median() / base.median()
        verdict = "" if name.startswith("fastheap") else f"  {ratio:4.2f}x"
        if not name.startswith("fastheap"):
            verdict += "  (target < 2x: " + ("met)" if ratio < 2 else "MISSED)")
        print(
            f"{name:<34} {bench.median() * 1e3:6.1f} ms {bench.median() / JOBS * 1e9:6.0f} ns"
            f"{verdict}",
            file=out,
        )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        suite = pyperf.BenchmarkSuite.load(sys.argv[2])
        report({b.get_name(): b for b in suite.get_benchmarks()})
        return
    runner = pyperf.Runner(processes=5, values=3, warmups=1)
    runner.metadata["description"] = "dpq FairHeap vs FastHeap, 100k jobs push then pop"
    runner.metadata["jobs"] = JOBS
    benches = {}
    for many in (False, True):
        suffix = "pop_many" if many else "per-item"
        name = f"fastheap {suffix}"
        benches[name] = runner.bench_time_func(name, plain, many)
        for count in TENANTS:
            name = f"fairheap {count} tenant{'s' if count > 1 else ''} {suffix}"
            benches[name] = runner.bench_time_func(name, fair, count, many)
    if not runner.args.worker and all(b is not None for b in benches.values()):
        report(benches)


if __name__ == "__main__":
    main()
