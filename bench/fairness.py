"""Per-client fairness under an Enqueue flood (issue 10): ``python bench/fairness.py``.

What a well-behaved client sees while other clients flood the cluster. It
starts what it measures, as ``dpq up`` does: an embedded PostgreSQL in a
temporary folder and, per configuration, a 3-node cluster with its gateway on
a database of its own. Then:

1. idle: one client (its own process, one channel) enqueues one job every
   ``--period-ms`` (50) through the gateway and times each round trip, for
   ``--idle-s`` seconds;
2. flood: ``--flooders`` processes (4) each push ``--batch``-job requests (1000
   jobs of 100 B) with ``--inflight`` (16) calls in flight on one channel, as
   fast as the cluster takes them, for ``--flood-s`` seconds, while the same
   client goes on; its samples count from ``--ramp-s`` after the flood began.

Printed per configuration: the client's p50/p99 idle and under flood, their
ratio (target: p99 under flood below 5x its idle p99), and the jobs per second
the flood got through. Configurations (``--gate``): ``on`` is the default
admission gate (``dpq.services.admission``), ``off`` turns it off on the nodes
and the gateway. ``--repeat N`` runs each N times and prints medians.
Everything is bounded: each phase by its duration, every call by a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The checkout this file is in, before any installed dpq (the cluster's processes use it too).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CALL_TIMEOUT_S = 30.0
GATE_OFF = ("--client-max-inflight-requests", "0", "--client-max-inflight-jobs", "0",
            "--max-inflight-jobs", "0")


# ------------------------------------------------------------------ processes

def victim(target: str, period_s: float, flooding, stop, out) -> None:
    """One job per period on one channel; ``(under flood?, seconds)`` per round trip."""
    import grpc

    from dpq.v1 import queue_pb2, queue_pb2_grpc

    samples: list[tuple[bool, float]] = []
    errors = 0
    with grpc.insecure_channel(target) as channel:
        stub = queue_pb2_grpc.QueueStub(channel)
        request = queue_pb2.EnqueueRequest(
            jobs=[queue_pb2.NewJob(queue="quiet", priority=1, payload=b"q" * 100)])
        stub.Enqueue(request, timeout=CALL_TIMEOUT_S)  # connected and warm
        due = time.monotonic()
        while not stop.is_set():
            under = flooding.is_set()
            t0 = time.monotonic()
            try:
                stub.Enqueue(request, timeout=CALL_TIMEOUT_S)
                samples.append((under, time.monotonic() - t0))
            except grpc.RpcError:
                errors += 1
            due = max(due + period_s, time.monotonic())
            time.sleep(max(0.0, due - time.monotonic()))
    out.put({"kind": "victim", "samples": samples, "errors": errors})


def flooder(target: str, batch: int, inflight: int, payload: int, stop, out) -> None:
    """``inflight`` lanes on one channel, each enqueueing ``batch`` jobs back to back."""
    import grpc

    from dpq.v1 import queue_pb2, queue_pb2_grpc

    async def main() -> dict:
        jobs = errors = 0
        request = queue_pb2.EnqueueRequest(
            jobs=[queue_pb2.NewJob(queue="flood", priority=3, payload=b"f" * payload)] * batch)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = queue_pb2_grpc.QueueStub(channel)

            async def lane() -> None:
                nonlocal jobs, errors
                while not stop.is_set():
                    try:
                        await stub.Enqueue(request, timeout=CALL_TIMEOUT_S)
                        jobs += batch
                    except grpc.aio.AioRpcError:
                        errors += 1
                        await asyncio.sleep(0.05)

            await asyncio.gather(*(lane() for _ in range(inflight)))
        return {"kind": "flooder", "jobs": jobs, "errors": errors}

    out.put(asyncio.run(main()))


# ------------------------------------------------------------------- the runs

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_config(name: str, args: argparse.Namespace, dsn: str, root: Path) -> dict:
    from dpq.cli.localcluster import LocalCluster

    extra = GATE_OFF if name == "off" else tuple(args.gate_arg)
    cluster = LocalCluster(root / name, nodes=3, dsn=dsn, ports=_free_ports(4),
                           node_args=extra, gateway_args=extra)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    flooding, stop_victim, stop_flood = ctx.Event(), ctx.Event(), ctx.Event()
    try:
        cluster.start()
        cluster.wait_ready(90)
        target = cluster.gateway_address
        quiet = ctx.Process(target=victim,
                            args=(target, args.period_ms / 1000, flooding, stop_victim, out))
        quiet.start()
        time.sleep(args.idle_s)
        floods = [ctx.Process(target=flooder, args=(target, args.batch, args.inflight,
                                                    args.payload_bytes, stop_flood, out))
                  for _ in range(args.flooders)]
        t0 = time.monotonic()
        for p in floods:
            p.start()
        time.sleep(args.ramp_s)
        flooding.set()
        time.sleep(args.flood_s)
        stop_victim.set()
        stop_flood.set()
        elapsed = time.monotonic() - t0
        results = [out.get(timeout=CALL_TIMEOUT_S + 30) for _ in range(1 + len(floods))]
        for p in (quiet, *floods):
            p.join(30)
        dead = cluster.exited()
        if dead:
            raise RuntimeError(f"exited during the run: {dead}")
    finally:
        for p in mp.active_children():
            p.kill()
        cluster.stop()
    samples = next(r for r in results if r["kind"] == "victim")
    idle = [s for under, s in samples["samples"] if not under]
    flood = [s for under, s in samples["samples"] if under]
    flood_jobs = sum(r["jobs"] for r in results if r["kind"] == "flooder")
    return {
        "gate": name,
        "idle_samples": len(idle), "flood_samples": len(flood),
        "idle_p50_ms": percentile(idle, 0.5) * 1000, "idle_p99_ms": percentile(idle, 0.99) * 1000,
        "flood_p50_ms": percentile(flood, 0.5) * 1000,
        "flood_p99_ms": percentile(flood, 0.99) * 1000,
        "flood_max_ms": max(flood) * 1000,
        "victim_errors": samples["errors"],
        "flood_jobs_per_s": flood_jobs / elapsed,
        "flood_errors": sum(r["errors"] for r in results if r["kind"] == "flooder"),
    }


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def summary(runs: list[dict]) -> dict:
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "gate"}
    out["p99_ratio"] = out["flood_p99_ms"] / out["idle_p99_ms"]
    out["p50_ratio"] = out["flood_p50_ms"] / out["idle_p50_ms"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gate", choices=("on", "off", "both"), default="both")
    p.add_argument("--gate-arg", action="append", default=[],
                   help="a flag for nodes and gateway in the 'on' runs, e.g. "
                        "--gate-arg=--client-max-inflight-jobs=1000 (repeatable)")
    p.add_argument("--repeat", type=int, default=1, help="runs per configuration (medians)")
    p.add_argument("--period-ms", type=float, default=50)
    p.add_argument("--idle-s", type=float, default=10)
    p.add_argument("--flood-s", type=float, default=30)
    p.add_argument("--ramp-s", type=float, default=2)
    p.add_argument("--flooders", type=int, default=4)
    p.add_argument("--inflight", type=int, default=16)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--payload-bytes", type=int, default=100)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    from dpq.lifeline import Lifeline
    from dpq.pg import embedded

    root = Path(tempfile.mkdtemp(prefix="dpq-fairness-"))
    watchdog = Lifeline()  # stops the PostgreSQL below if this process is killed
    watchdog.watch_postgres(root / "pg")
    configs = ["on", "off"] if args.gate == "both" else [args.gate]
    result: dict = {"machine": {"cpus": len(os.sched_getaffinity(0)),
                                "platform": platform.platform(),
                                "load_before": os.getloadavg()[0]},
                    "options": vars(args), "configs": {}}
    handles = []
    try:
        for name in configs:
            runs = []
            for i in range(args.repeat):
                handle = embedded.start(root / "pg", database=f"fair_{name}_{i}")
                handles.append(handle)
                run = run_config(name, args, handle.dsn, root / f"run{i}")
                runs.append(run)
                print(f"gate {name} run {i + 1}: " + ", ".join(
                    f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in run.items() if k != "gate"), flush=True)
            result["configs"][name] = {"runs": runs, "median": summary(runs)}
    finally:
        for handle in handles:
            handle.stop()
        watchdog.close()
        shutil.rmtree(root, ignore_errors=True)
    result["machine"]["load_after"] = os.getloadavg()[0]
    print(f"\nmachine: {result['machine']['cpus']} CPUs usable, load "
          f"{result['machine']['load_before']:.1f} before / {result['machine']['load_after']:.1f} "
          f"after; {args.flooders} flooders x {args.inflight} in flight x {args.batch} jobs of "
          f"{args.payload_bytes} B; one job per {args.period_ms:.0f} ms from the quiet client")
    print(f"{'gate':<5} {'idle p50':>9} {'idle p99':>9} {'flood p50':>10} {'flood p99':>10} "
          f"{'p99 ratio':>10} {'flood jobs/s':>13}")
    for name, data in result["configs"].items():
        m = data["median"]
        print(f"{name:<5} {m['idle_p50_ms']:>7.1f}ms {m['idle_p99_ms']:>7.1f}ms "
              f"{m['flood_p50_ms']:>8.1f}ms {m['flood_p99_ms']:>8.1f}ms {m['p99_ratio']:>9.1f}x "
              f"{m['flood_jobs_per_s']:>13,.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
