"""pyperf benchmark: the compiled smooth WRR against its pure-Python twin.

    python bench/bench_wrr.py                # full run (a few minutes)
    python bench/bench_wrr.py --fast         # quicker, noisier
    python bench/bench_wrr.py -o wrr.json    # keep the numbers; the ratio table
                                             # is printed at the end either way

Each benchmark makes 1,000,000 picks over 3 and over 50 nodes with fixed
random weights (seed 1). The targets in issue 2: ``pick_many`` at least 20x the
twin.
"""

from __future__ import annotations

import random
import sys

import pyperf

from dpq._wrr import SmoothWRR
from dpq.gateway.wrr import PyWRR

PICKS = 1_000_000


def make_weights(nodes: int) -> tuple[list[int], list[int]]:
    rng = random.Random(1)
    return list(range(1, nodes + 1)), [rng.randint(1, 1000) for _ in range(nodes)]


def per_item(loops: int, impl, nodes: int) -> float:
    ids, ws = make_weights(nodes)
    total = 0.0
    for _ in range(loops):
        wrr = impl(ids, ws)
        pick = wrr.pick
        t0 = pyperf.perf_counter()
        for _ in range(PICKS):
            pick()
        total += pyperf.perf_counter() - t0
    return total


def batch(loops: int, impl, nodes: int) -> float:
    ids, ws = make_weights(nodes)
    total = 0.0
    for _ in range(loops):
        wrr = impl(ids, ws)
        t0 = pyperf.perf_counter()
        for _ in range(PICKS // 1000):
            wrr.pick_many(1000)
        total += pyperf.perf_counter() - t0
    return total


CASES = [
    (f"{kind} {name} {nodes} nodes", func, impl, nodes)
    for nodes in (3, 50)
    for name, impl in (("twin", PyWRR), ("fast", SmoothWRR))
    for kind, func in (("pick", per_item), ("pick_many", batch))
]


def report(suite: pyperf.BenchmarkSuite) -> None:
    med = {b.get_name(): b.median() for b in suite.get_benchmarks()}
    print(f"\n{'benchmark':34} {'median':>10} {'Mpicks/s':>9}")
    for name, seconds in med.items():
        print(f"{name:34} {seconds * 1e3:8.1f}ms {PICKS / seconds / 1e6:9.2f}")
    print(f"\n{'ratio (same run)':44} {'value':>7}  target")
    for nodes in (3, 50):
        twin = med.get(f"pick twin {nodes} nodes")
        for label, name, target in (
            ("fast pick vs twin pick", f"pick fast {nodes} nodes", None),
            ("fast pick_many vs twin pick_many", f"pick_many fast {nodes} nodes", 20),
        ):
            base = twin if "many" not in name else med.get(f"pick_many twin {nodes} nodes")
            if base and name in med:
                goal = f">= {target}x" if target else ""
                print(f"{label + f' ({nodes} nodes)':44} {base / med[name]:6.1f}x  {goal}")


def main() -> None:
    # One value per process: each is a million picks, long enough on its own.
    runner = pyperf.Runner(processes=6, values=1, warmups=1, loops=1)
    runner.metadata["description"] = "dpq._wrr vs dpq.gateway.wrr twin, 1M picks"
    benches = [runner.bench_time_func(name, func, impl, nodes) for name, func, impl, nodes in CASES]
    benches = [b for b in benches if b is not None]
    if not runner.args.worker and benches:
        report(pyperf.BenchmarkSuite(benches))


if __name__ == "__main__":
    sys.exit(main())
