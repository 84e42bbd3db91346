"""The end-to-end benchmark: how fast dpq moves jobs, beside the ceilings of the same machine.

    dpq bench                         # 200,000 jobs: the full run (a few minutes)
    dpq bench --quick                 # 20,000 jobs, 5 s of steady state
    python bench/e2e.py --jobs 50000 --json out.json
    dpq bench --dsn postgresql://...  # an existing server (databases are created, then dropped)

It starts what it measures, as ``dpq up`` does: PostgreSQL (the embedded
server in a temporary folder, or ``--dsn``), a 3-node cluster and its gateway
(durable defaults: the nodes fsync their log, PostgreSQL runs with fsync and
``synchronous_commit`` as configured, printed), then P producer and C consumer
processes on the project's client library (see ``dpq.bench._workers``). The
workload: ``--jobs`` jobs of ``--payload-bytes`` (100 B), priorities uniform
in 1..5, one fixed seed.

Phases, each measured on its own:

1. enqueue only: the producers fill the queue as fast as they can with
   ``enqueue_many`` calls of ``--batch`` jobs, ``--inflight`` calls in flight
   each. Rate = jobs / (last call answered − start). Then the driver waits
   until PostgreSQL holds it all (the leader's writer catches up), and reports
   that too.
2. consume+ack only: the consumers drain the full queue, polling every node,
   acking each job. Rate = jobs / (last ack answered − start).
3. steady state, in two parts, producers and consumers together:

   a. peak: the producers offer more than the cluster can take (``--peak-rate``;
      default half the enqueue rate of phase 1, which is above what consumers
      and producers together get through) for ``--steady-seconds``; the peak is
      the rate jobs were delivered in that window.
   b. latency: the producers offer half of that peak (``--rate`` overrides it)
      for ``--steady-seconds``. Enqueue latency is per job (one ``submit`` each
      on a batching producer) from its scheduled time; end-to-end latency from
      the moment its enqueue returned in the producer to the moment the
      consumer's handler got it (both CLOCK_MONOTONIC, one clock on one
      machine), and from its scheduled send time.

   c. low rate: the same at a fixed ``--low-rate`` (1,000 jobs/s), the rate
      most users run at: latencies, and the nodes' CPU in cores (CPU seconds
      per second of the phase, all node processes together; the idle
      cluster's is printed beside it).

   "Half of the measured peak" is half of (a), not of phase 1: phase 1 has no
   consumers, and half of its rate is more than the cluster can deliver, so
   the queue would grow all through the window and the latencies would be
   those of the growing backlog.

   After each steady part, the ordering figure (``dpq.bench._ordering``): the
   share of deliveries made while a strictly more urgent job (aged key, with
   the nodes' ``--aging-step-ms``) was ready in the cluster.

``--metrics on`` runs every process with Prometheus metrics, scraped every second;
``--metrics both`` adds a second 3-node run with them and compares the two
(``dpq.bench._metrics``).

``--repeat 3`` runs it all three times and reports the median of each figure
(the targets are medians of three; see ``dpq/bench/_medians.py``).

Beside each phase: CPU seconds per 1,000 jobs and per second (cores) by process kind (psutil on
the pids; PostgreSQL with all its children; workers report their own), and
batch sizes at every hop from the counters of nodes and gateway (differences
over the phase, catch-up included), the producers' requests per job (the
client library's count), and whether a leader was elected during
the phase (a new ballot: its figures then include the election). With
``--dsn``, PostgreSQL's CPU is that of the whole server (when it runs on this
machine), other users' work included.

Ceilings, in the same run: raw binary COPY of the same rows into the same
PostgreSQL (``dpq.bench._ceiling``), and a single-node dpq (1 node + gateway,
phases 1 and 2) for what replication costs. dpq's figures are printed as
fractions of them, and beside issue 6's targets (for reading; nothing here
asserts a time).

Bounded: every wait has a deadline, a phase with no progress for
``--stall-seconds`` stops the run, and every process started is stopped at
the end, also on an error or Ctrl-C. Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Self

import psycopg

from dpq.bench import _ceiling, _medians, _metrics, _ordering, _probe
from dpq.bench._phase import BenchError, run_phase
from dpq.bench._report import Progress, table
from dpq.bench._stats import ratio, summarize_ns
from dpq.bench._workers import HEAD, Drain, Fill, Paced, WorkerSpec

#: Issue 6's targets (2-core machine), printed beside the figures.
TARGETS = {
    "enqueue_jobs_per_s": 30_000,
    "consume_jobs_per_s": 15_000,
    "steady_jobs_per_s": 10_000,
    "enqueue_p99_ms": 20,
    "e2e_p99_ms": 50,
    "replication_cost": 0.35,
}
QUEUE = "bench"
IDLE_S = 2.0


# -------------------------------------------------------------------- options

def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0],
        epilog="Benchmarks are not tests: the table is for reading. See dpq/bench/e2e.py.")
    w = p.add_argument_group("workload")
    w.add_argument("--jobs", type=int, help="jobs in phases 1 and 2 (200,000; --quick: 20,000)")
    w.add_argument("--payload-bytes", type=int, default=100, help="payload size (100; at least 16)")
    w.add_argument("--seed", type=int, default=42, help="priorities and payloads (42)")
    w.add_argument("--producers", "-P", type=int, default=2, help="producer processes (2)")
    w.add_argument("--consumers", "-C", type=int, default=2, help="consumer processes (2)")
    w.add_argument("--quick", action="store_true",
                   help="a short try: --jobs 20000 --steady-seconds 5 unless given")
    c = p.add_argument_group("clients")
    c.add_argument("--batch", type=int, default=1000, help="jobs per enqueue_many call (1000)")
    c.add_argument("--inflight", type=int, default=4,
                   help="enqueue_many calls in flight per producer, phase 1 (4)")
    c.add_argument("--peak-rate", type=float,
                   help="offered rate of the steady peak, jobs/s, all producers (default: "
                        "half of phase 1); 0 skips the peak (then give --rate)")
    c.add_argument("--rate", type=float,
                   help="offered rate of the steady latency run, jobs/s, all producers "
                        "(default: half of the steady peak)")
    c.add_argument("--low-rate", type=float, default=1000.0,
                   help="offered rate of the low-rate latency run, jobs/s, all producers "
                        "(1000; 0 skips it)")
    c.add_argument("--steady-seconds", type=float, default=None, help="steady window (20)")
    c.add_argument("--steady-batch-size", type=int, default=500,
                   help="the batching producer's largest batch in phase 3 (500)")
    c.add_argument("--consumer-max-jobs", type=int, default=500, help="jobs per long-poll (500)")
    c.add_argument("--consumer-concurrency", type=int, default=1000,
                   help="handlers per consumer = jobs held at once (1000)")
    c.add_argument("--consumer-wait", type=float, default=1.0, help="long-poll wait, s (1)")
    r = p.add_argument_group("what runs")
    r.add_argument("--dsn", help="an existing PostgreSQL server (default: embedded, in a temp dir)")
    r.add_argument("--skip-single-node", action="store_true", help="no 1-node ceiling")
    r.add_argument("--single-node-steady", action="store_true",
                   help="run phase 3 on the single node too (at the same offered rate)")
    r.add_argument("--skip-copy", action="store_true", help="no raw-COPY ceiling")
    r.add_argument("--copy-batches", default="1000,10000", help="COPY rows per transaction")
    r.add_argument("--copy-rounds", type=int, default=3, help="COPY rounds, median kept (3)")
    r.add_argument("--node-arg", action="append", default=[], metavar="ARG",
                   help="pass ARG to every dpq-node (repeat; e.g. --node-arg=--tick-ms=5)")
    r.add_argument("--gateway-arg", action="append", default=[], metavar="ARG",
                   help="pass ARG to the gateway (repeat)")
    r.add_argument("--data-dir", help="keep data and logs here (default: a temp dir, removed)")
    r.add_argument("--metrics", choices=("off", "on", "both"), default="off",
                   help="Prometheus metrics on every process, scraped every --scrape-interval "
                        "(on), or a second 3-node run with them to compare (both) (off)")
    r.add_argument("--scrape-interval", type=float, default=_metrics.DEFAULT_SCRAPE_INTERVAL_S,
                   help=f"seconds between scrapes ({_metrics.DEFAULT_SCRAPE_INTERVAL_S:g})")
    o = p.add_argument_group("output and limits")
    o.add_argument("--json", metavar="FILE", help="write every number, the machine and the options")
    o.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run everything N times and report the median of each figure (1; "
                        "the targets are medians of 3)")
    o.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="the progress line (default: when stderr is a terminal)")
    o.add_argument("--phase-timeout", type=float,
                   help="seconds a phase may take (default: 180, or 2 ms a job if more)")
    o.add_argument("--stall-seconds", type=float, default=60.0,
                   help="stop when a phase makes no progress this long (60)")
    return p


def parse(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    p = parser(prog)
    args = p.parse_args(argv)
    if args.jobs is None:
        args.jobs = 20_000 if args.quick else 200_000
    if args.steady_seconds is None:
        args.steady_seconds = 5.0 if args.quick else 20.0
    if args.payload_bytes < HEAD.size:
        p.error(f"--payload-bytes must be at least {HEAD.size} (send time and sequence)")
    for name in ("jobs", "producers", "consumers", "batch", "inflight", "steady_batch_size",
                 "consumer_max_jobs", "consumer_concurrency"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.steady_seconds < 0 or (args.rate is not None and args.rate <= 0):
        p.error("--steady-seconds must not be negative and --rate must be positive")
    if args.peak_rate is not None and args.peak_rate < 0:
        p.error("--peak-rate must not be negative")
    if args.low_rate < 0:
        p.error("--low-rate must not be negative")
    if args.peak_rate == 0 and args.rate is None:
        p.error("--peak-rate 0 skips the peak, whose half is the default --rate: give --rate")
    args.copy_batch_sizes = [int(s) for s in args.copy_batches.split(",") if s.strip()]
    return args


# --------------------------------------------------------------------- helpers

def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def machine() -> dict[str, Any]:
    import grpc
    import psutil

    from dpq.cli.localcluster import PACKAGE_ROOT

    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "-C", PACKAGE_ROOT, "rev-parse", "--short", "HEAD"],
                             check=False, capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip() or None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "grpc": grpc.__version__,
        "psycopg": psycopg.__version__,
        "dpq_commit": commit,
        "load_before": _load(),
    }


@contextlib.contextmanager
def no_sigint():
    """Ctrl-C waits until the block is done (stopping processes must not be cut short)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to hold back
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def aging_step_ms(node_args: list[str]) -> int:
    """The nodes' aging step: the last ``--aging-step-ms`` in ``--node-arg``, else the default."""
    from dpq.node.config import DEFAULT_AGING_STEP_MS

    step = DEFAULT_AGING_STEP_MS
    for i, arg in enumerate(node_args):
        if arg.startswith("--aging-step-ms="):
            step = int(arg.split("=", 1)[1])
        elif arg == "--aging-step-ms" and i + 1 < len(node_args):
            step = int(node_args[i + 1])
    return step


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _ids(results: dict[int, dict[str, Any]], kind: str) -> list[int]:
    out: list[int] = []
    for r in results.values():
        if r["kind"] == kind:
            out.extend(r["ids"])
    return out


def _checks(enqueued: list[int], delivered: list[int], results: dict[int, dict[str, Any]],
            ) -> dict[str, int]:
    want, got = set(enqueued), set(delivered)
    consumers = [r for r in results.values() if r["kind"] == "consumer"]
    return {
        "enqueued": len(enqueued),
        "enqueued_distinct": len(want),
        "delivered": len(delivered),
        "delivered_distinct": len(got),
        "acked": sum(r["acked"] for r in consumers),
        "missing": len(want - got),
        "unexpected": len(got - want),
        "duplicate_deliveries": len(delivered) - len(got),
        "redeliveries": sum(r["redeliveries"] for r in consumers),
        "ack_errors": sum(r["errors"] for r in consumers),
        "enqueue_errors": sum(r["errors"] for r in results.values() if r["kind"] == "producer"),
    }


# ------------------------------------------------------------------------ runs

class Run:
    """One cluster (3 nodes or 1) on its own database, and its phases."""

    def __init__(self, name: str, nodes: int, dsn: str, root: Path, args: argparse.Namespace,
                 progress: Progress, postmaster: int | None, metrics: bool = False) -> None:
        from dpq.cli.localcluster import LocalCluster

        self.name, self.dsn, self.args, self.progress = name, dsn, args, progress
        ports = free_ports(2 * nodes + 1)  # gateway + client ports, then peer ports
        self.cluster = LocalCluster(root, nodes=nodes, dsn=dsn, ports=ports[:nodes + 1],
                                    peer_ports=ports[nodes + 1:], node_args=tuple(args.node_arg),
                                    gateway_args=tuple(args.gateway_arg),
                                    metrics_ports=free_ports(nodes + 1) if metrics else None)
        self.scraper: _metrics.Scraper | None = None
        if metrics:
            self.scraper = _metrics.Scraper(
                [self.cluster.gateway_metrics_address, *self.cluster.metrics_addresses.values()],
                args.scrape_interval)
        self.postmaster = postmaster
        self.result: dict[str, Any] = {"nodes": nodes}

    def __enter__(self) -> Self:
        try:
            self.cluster.start()
            info = self.cluster.wait_ready(60)
        except BaseException:
            self.cluster.stop()
            raise
        self.result["leader_at_start"] = info.leader_id
        if self.scraper is not None:
            self.scraper.start()
        kinds = {"nodes": [_probe.ProcessCpu(p.pid) for p in self.cluster.procs.values()],
                 "gateway": [_probe.ProcessCpu(self.cluster.gateway.pid)]}
        if self.postmaster is not None:
            kinds["postgres"] = [_probe.ProcessCpu(self.postmaster, tree=True)]
        self.meter = _probe.CpuMeter(kinds)
        # What the cluster burns doing nothing (ticks, heartbeats, health reports): each
        # phase's CPU window is a little longer than its work, and this is the cost of that.
        before, t0 = self.meter.read(), time.monotonic()
        time.sleep(IDLE_S)
        after, dt = self.meter.read(), time.monotonic() - t0
        self.result["idle_cpu_per_s"] = {k: (after[k] - before[k]) / dt for k in after}
        return self

    def __exit__(self, *exc: object) -> None:
        if self.scraper is not None:
            self.result["metrics"] = self.scraper.stop()
        with no_sigint():
            self.cluster.stop()

    def check(self) -> None:
        dead = self.cluster.exited()
        if dead:
            raise BenchError("exited during the run: " + "; ".join(
                f"{name} (code {code}, log {log})" for name, (code, log) in dead.items()))

    def _timeout(self, jobs: int, seconds: float = 0.0) -> float:
        if self.args.phase_timeout is not None:
            return self.args.phase_timeout
        return max(180.0, seconds + jobs * 0.002)

    def _spec(self, index: int, seed: int, work: Fill | Paced | Drain,
              timeout_s: float) -> WorkerSpec:
        return WorkerSpec(index, self.cluster.gateway_address, QUEUE, seed,
                          self.args.payload_bytes, work, timeout_s)

    def _consumers(self, first: int, timeout_s: float) -> list[WorkerSpec]:
        a = self.args
        work = Drain(a.consumer_max_jobs, a.consumer_concurrency, a.consumer_wait)
        return [self._spec(first + i, 0, work, timeout_s) for i in range(a.consumers)]

    def _phase(self, label: str, specs: list[WorkerSpec], consume_target: int | None,
               pg_rows: int) -> tuple[int, dict[int, dict[str, Any]], dict[str, Any]]:
        """Run one phase; its start, the workers' results, and what was measured around it."""
        before: dict[str, Any] = {}
        cluster = self.cluster

        def at_start() -> None:
            before["counters"] = _probe.snapshot_counters(cluster.gateway_address,
                                                          cluster.peer_addresses)
            before["cpu"] = self.meter.read()
            before["cpu_ns"] = time.monotonic_ns()
            before["driver"] = _probe.own_cpu()
            before["load"] = _load()
            self.progress.begin(f"{self.name} · {label}")  # the clock starts now

        def on_progress(enq: int, acked: int, target: int | None) -> None:
            if consume_target is None and not any(s.kind == "consumer" for s in specs):
                self.progress.update(enq, self.args.jobs, "enqueued")
            else:
                self.progress.update(acked, target, f"acked, {enq:,} enqueued")

        self.progress.begin(f"{self.name} · {label}")
        t0, results = run_phase(specs, consume_target=consume_target,
                                timeout_s=specs[0].timeout_s,
                                stall_s=self.args.stall_seconds, at_start=at_start,
                                check=self.check, on_progress=on_progress)
        clients_done = time.monotonic_ns()
        caught_up_s, rows, slot = _probe.wait_written(self.dsn, pg_rows, self.args.stall_seconds)
        written_ns = time.monotonic_ns()
        after_counters = _probe.snapshot_counters(cluster.gateway_address, cluster.peer_addresses)
        cpu = self.meter.read()
        cpu_window_s = (time.monotonic_ns() - before["cpu_ns"]) / 1e9
        measured = {
            "cpu_s": {k: cpu[k] - before["cpu"][k] for k in cpu},
            # The meter's window: from the start until PostgreSQL caught up.
            "cpu_window_s": cpu_window_s,
            "counters": _probe.counter_deltas(before["counters"], after_counters),
            "load_before": before["load"],
            "load_after": _load(),
            "pg_caught_up_s": caught_up_s,  # after the clients were done (None: timed out)
            "pg_rows_after": rows,
            "pg_applied_slot_after": slot,
            "written_ns": written_ns if caught_up_s is not None else None,
            "clients_done_ns": clients_done,
        }
        measured["cpu_s"]["driver"] = _probe.own_cpu() - before["driver"]
        for kind in ("producers", "consumers"):
            measured["cpu_s"][kind] = sum(r["cpu_s"] for r in results.values()
                                          if r["kind"] + "s" == kind)
        measured["cpu_s"]["total"] = sum(measured["cpu_s"].values())
        # CPU seconds per second of the window (workers: of the same window, roughly).
        measured["cpu_cores"] = {k: v / cpu_window_s for k, v in measured["cpu_s"].items()}
        requests = sum(r.get("requests", 0) for r in results.values() if r["kind"] == "producer")
        jobs = sum(len(r["ids"]) for r in results.values() if r["kind"] == "producer")
        delivered = sum(len(r["ids"]) for r in results.values()
                        if r["kind"] == "consumer")
        measured["messages_per_job"] = {
            "producer_requests": ratio(requests, jobs),
            **_probe.messages_per_job(measured["counters"], max(jobs, delivered))}
        return t0, results, measured

    @staticmethod
    def _per_1000(measured: dict[str, Any], jobs: int) -> dict[str, float | None]:
        return {k: (v / jobs * 1000 if jobs else None) for k, v in measured["cpu_s"].items()}

    # ----------------------------------------------------------------- phases

    def enqueue(self) -> list[int]:
        a = self.args
        share = [a.jobs // a.producers + (i < a.jobs % a.producers) for i in range(a.producers)]
        timeout_s = self._timeout(a.jobs)
        specs = [self._spec(i, a.seed * 1000 + i, Fill(n, a.batch, a.inflight), timeout_s)
                 for i, n in enumerate(share) if n]
        t0, results, m = self._phase("enqueue", specs, None, a.jobs)
        ids = _ids(results, "producer")
        end = max(max(r["call_returned_ns"], default=t0) for r in results.values())
        seconds = (end - t0) / 1e9
        calls = [x for r in results.values() for x in r["call_latency_ns"]]
        written_s = (m["written_ns"] - t0) / 1e9 if m["written_ns"] else None
        self.result["enqueue"] = {
            "jobs": len(ids), "seconds": seconds, "jobs_per_s": ratio(len(ids), seconds),
            "jobs_per_s_written": ratio(len(ids), written_s),
            "call_latency": summarize_ns(calls), "calls": len(calls),
            "distinct_ids": len(set(ids)),
            "cpu_per_1000_jobs": self._per_1000(m, len(ids)), **m,
        }
        self.progress.end(f"{len(ids):,} jobs in {seconds:.2f}s = {len(ids) / seconds:,.0f}/s; "
                          f"PostgreSQL caught up {_s(m['pg_caught_up_s'])} later")
        return ids

    def consume(self, enqueued: list[int]) -> None:
        specs = self._consumers(0, self._timeout(len(enqueued)))
        t0, results, m = self._phase("consume+ack", specs, len(enqueued), 0)
        delivered = _ids(results, "consumer")
        end = max(r["last_ack_ns"] for r in results.values())
        seconds = (end - t0) / 1e9
        acked = sum(r["acked"] for r in results.values())
        first = min((min(r["delivered_ns"], default=end) for r in results.values()), default=end)
        self.result["consume"] = {
            "jobs": acked, "seconds": seconds, "jobs_per_s": ratio(acked, seconds),
            "first_delivery_s": (first - t0) / 1e9,
            "per_consumer": [r["acked"] for r in results.values()],
            "cpu_per_1000_jobs": self._per_1000(m, acked), **m,
        }
        self.result["checks"] = _checks(enqueued, delivered, results)
        self.result["checks"]["pg_rows_after_drain"] = m["pg_rows_after"]
        self.progress.end(f"{acked:,} jobs in {seconds:.2f}s = {acked / seconds:,.0f}/s")

    def steady(self, rate: float, key: str = "steady") -> None:
        """Phase 3 at ``rate`` offered; its figures go under ``key``
        (``steady_peak`` for part a, ``steady`` for part b, ``steady_low`` for part c)."""
        a = self.args
        timeout_s = self._timeout(round(rate * a.steady_seconds), a.steady_seconds)
        specs = [self._spec(i, a.seed * 1000 + 500 + i,
                            Paced(rate / a.producers, a.steady_seconds, a.steady_batch_size),
                            timeout_s)
                 for i in range(a.producers)]
        specs += self._consumers(a.producers, timeout_s)
        label = {"steady_peak": "steady peak", "steady_low": "low rate"}.get(key, "steady")
        t0, results, m = self._phase(f"{label} {rate:,.0f}/s", specs, None, 0)
        window_end = t0 + int(a.steady_seconds * 1e9)
        prods = [r for r in results.values() if r["kind"] == "producer"]
        cons = [r for r in results.values() if r["kind"] == "consumer"]
        returned = {i: t for r in prods for i, t in zip(r["ids"], r["returned_ns"], strict=True)}
        from_return, from_send, early = [], [], 0
        delivered_in_window = 0
        for r in cons:
            for job_id, t, sent in zip(r["ids"], r["delivered_ns"], r["sent_ns"], strict=True):
                from_send.append(t - sent)
                if t <= window_end:
                    delivered_in_window += 1
                ret = returned.get(job_id)
                if ret is not None:
                    from_return.append(t - ret)
                    early += t < ret
        enqueued_in_window = sum(1 for r in prods for t in r["returned_ns"] if t <= window_end)
        ids = _ids(results, "producer")
        delivered = _ids(results, "consumer")
        last_ack = max(r["last_ack_ns"] for r in cons)
        self.result[key] = {
            "offered_rate": rate, "seconds": a.steady_seconds,
            "scheduled": sum(r["scheduled"] for r in prods),
            "offered": sum(r["offered"] for r in prods),
            "enqueued": len(ids),
            "enqueued_per_s": enqueued_in_window / a.steady_seconds if a.steady_seconds else None,
            "delivered_per_s": delivered_in_window / a.steady_seconds if a.steady_seconds else None,
            # Offered by the window's end and not delivered by then: queued in the producers
            # (not yet sent or answered) or in the cluster.
            "backlog_at_window_end": sum(r["offered"] for r in prods) - delivered_in_window,
            "drained_after_window_s": max(0.0, (last_ack - window_end) / 1e9),
            "enqueue_latency": summarize_ns(x for r in prods for x in r["latency_ns"]),
            "enqueue_latency_is": "per job: one submit() on a batching AsyncProducer, "
                                  "from its scheduled time to its id (open loop)",
            "e2e_from_return": summarize_ns(from_return),
            "e2e_from_send": summarize_ns(from_send),
            "delivered_before_return": early,
            "ordering": self._ordering(prods, cons),
            "checks": _checks(ids, delivered, results),
            "cpu_per_1000_jobs": self._per_1000(m, len(ids)), **m,
        }
        st = self.result[key]
        self.progress.end(
            f"{st['delivered_per_s'] or 0:,.0f}/s delivered of {rate:,.0f}/s offered; enqueue "
            f"p99 {_ms(st['enqueue_latency']['p99'])}, end-to-end p99 "
            f"{_ms(st['e2e_from_return']['p99'])}; nodes {st['cpu_cores']['nodes']:.2f} cores; "
            f"out of order {_pct(st['ordering']['share'])}")

    def _ordering(self, prods: list[dict[str, Any]], cons: list[dict[str, Any]],
                  ) -> dict[str, Any]:
        step_ms = aging_step_ms(self.args.node_arg)
        t0 = time.process_time()

        def cat(rs: list[dict[str, Any]], field: str) -> list[int]:
            return [x for r in rs for x in r[field]]

        out: dict[str, Any] = _ordering.out_of_order(
            cat(prods, "ids"), cat(prods, "priorities"), cat(prods, "returned_ns"),
            cat(cons, "ids"), cat(cons, "delivered_ns"), step_ms * 1_000_000)
        out["aging_step_ms"] = step_ms
        # Priorities alone: most of the figure above can be order within one priority.
        out["share_by_priority"] = _ordering.out_of_order(
            cat(prods, "ids"), cat(prods, "priorities"), cat(prods, "returned_ns"),
            cat(cons, "ids"), cat(cons, "delivered_ns"), None)["share"]
        out["computed_in_cpu_s"] = time.process_time() - t0
        return out


def _s(v: float | None) -> str:
    return "never (timed out)" if v is None else f"{v:.2f}s"


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f} ms"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.2%}"


# ------------------------------------------------------------------ databases

class Databases:
    """Databases of our own on the server (created here, dropped at the end)."""

    def __init__(self, server_dsn: str) -> None:
        self.server_dsn = server_dsn
        self.tag = uuid.uuid4().hex[:8]
        self.made: list[str] = []

    def create(self, suffix: str) -> str:
        name = f"dpq_bench_{self.tag}_{suffix}"
        with psycopg.connect(self.server_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        return psycopg.conninfo.make_conninfo(self.server_dsn, dbname=name)

    def drop_all(self) -> None:
        with psycopg.connect(self.server_dsn, autocommit=True) as conn:
            for name in self.made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.clear()


# ----------------------------------------------------------------------- main

def fractions(result: dict[str, Any]) -> dict[str, Any]:
    runs = result.get("runs", {})
    enq = {n: (r.get("enqueue") or {}).get("jobs_per_s") for n, r in runs.items()}
    con = {n: (r.get("consume") or {}).get("jobs_per_s") for n, r in runs.items()}
    out: dict[str, Any] = {"enqueue_vs_copy": {}}
    for name in runs:
        out["enqueue_vs_copy"][name] = {
            kind: {size: ratio(enq[name], m["rows_per_s"]) for size, m in sizes.items()}
            for kind, sizes in result.get("ceilings", {}).get("copy", {}).items()}
    e, c = ratio(enq.get("3-node"), enq.get("1-node")), ratio(con.get("3-node"), con.get("1-node"))
    out["enqueue_3n_over_1n"] = e
    out["consume_3n_over_1n"] = c
    out["replication_cost_enqueue"] = None if e is None else 1 - e
    out["replication_cost_consume"] = None if c is None else 1 - c
    return out


def execute(args: argparse.Namespace, result: dict[str, Any], progress: Progress,
            root: Path) -> None:
    from dpq.pg import embedded
    from dpq.pg.migrate import migrate

    pg = None
    dbs: Databases | None = None
    try:
        if args.dsn:
            server = args.dsn
        else:
            pg = embedded.start(root / "postgres", database="dpq_bench")
            server = pg.admin_dsn
        dbs = Databases(server)
        info = _probe.postgres_info(server)
        result["postgres"] = info
        print(f"PostgreSQL {info['version']}: fsync={info['fsync']}, synchronous_commit="
              f"{info['synchronous_commit']}, wal_sync_method={info['wal_sync_method']}",
              file=sys.stderr)
        if not args.skip_copy:
            dsn = dbs.create("copy")
            asyncio.run(migrate(dsn))
            progress.begin("ceiling · raw COPY")
            result["ceilings"] = {"copy": _ceiling.measure(
                dsn, args.jobs, args.copy_batch_sizes, args.payload_bytes, args.seed,
                args.copy_rounds)}
            progress.end(", ".join(f"{k} {s}/txn {v['rows_per_s']:,.0f} rows/s"
                                   for k, d in result["ceilings"]["copy"].items()
                                   for s, v in d.items()))
        on = args.metrics == "on"
        plan = [("3-node", 3, on)]
        if args.metrics == "both":  # the same cluster and offered rates, metrics on
            plan.append((_metrics.WITH_METRICS, 3, True))
        plan += [] if args.skip_single_node else [("1-node", 1, on)]
        rate, peak_rate = args.rate, args.peak_rate
        for name, nodes, metrics in plan:
            suffix = f"{nodes}n" + ("m" if name == _metrics.WITH_METRICS else "")
            run = Run(name, nodes, dbs.create(suffix), root / name, args,
                      progress, info["postmaster_pid"], metrics=metrics)
            result["runs"][name] = run.result
            with run:
                ids = run.enqueue()
                run.consume(ids)
                if (nodes == 3 or args.single_node_steady) and args.steady_seconds > 0:
                    if peak_rate is None:
                        peak_rate = run.result["enqueue"]["jobs_per_s"] / 2
                    if peak_rate:
                        run.steady(peak_rate, "steady_peak")
                    if rate is None:
                        rate = max(1.0, (run.result["steady_peak"]["delivered_per_s"] or 0) / 2)
                    run.steady(rate)
                if ((nodes == 3 or args.single_node_steady) and args.steady_seconds > 0
                        and args.low_rate > 0):
                    run.steady(args.low_rate, "steady_low")
    finally:
        with contextlib.suppress(Exception):
            if dbs is not None and args.dsn:
                dbs.drop_all()
        if pg is not None:
            with no_sigint():
                pg.stop()


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse(argv, prog)
    if args.repeat < 1:
        raise SystemExit(f"--repeat must be at least 1, not {args.repeat}")
    results: list[dict[str, Any]] = []
    code = 0
    for i in range(args.repeat):
        if args.repeat > 1:
            print(f"run {i + 1} of {args.repeat}", file=sys.stderr)
        code, result = _run_once(args, Path(args.data_dir) / f"run-{i + 1}"
                                 if args.data_dir and args.repeat > 1 else None)
        results.append(result)
        if code:
            break
    if len(results) > 1 and not code:
        result = _medians.merge(results)
        result["repeat"] = {"runs": len(results), "each": results}
    out = table(result) + _metrics.comparison(result)
    if len(results) > 1 and not code:
        out += (f"\nmedians of {len(results)} runs, each figure on its own (every run is in "
                f"--json under repeat.each); checks: the worst run's")
    print(out)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return code


def _run_once(args: argparse.Namespace, data_dir: Path | None) -> tuple[int, dict[str, Any]]:
    progress = Progress(args.progress)
    result: dict[str, Any] = {
        "benchmark": "dpq e2e", "machine": machine(),
        "options": {k: v for k, v in vars(args).items() if k != "copy_batch_sizes"},
        "targets": TARGETS, "runs": {},
    }
    if result["options"].get("dsn"):
        result["options"]["dsn"] = "(given)"  # may hold a password
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    root = Path(data_dir or args.data_dir or tempfile.mkdtemp(prefix="dpq-bench-")).resolve()
    code = 0
    try:
        execute(args, result, progress, root)
    except KeyboardInterrupt:
        result["error"] = "interrupted (Ctrl-C)"
        code = 130
    except BenchError as exc:
        result["error"] = str(exc)
        code = 1
    except Exception as exc:  # noqa: BLE001 - reported with what was measured
        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {exc}"
        code = 1
    finally:
        if not args.data_dir and code != 1:
            with no_sigint():
                shutil.rmtree(root, ignore_errors=True)
        elif not args.data_dir:
            print(f"kept the data and logs of this failed run in {root}", file=sys.stderr)
    result["machine"]["load_after"] = _load()
    result["fractions"] = fractions(result)
    return code, result


if __name__ == "__main__":
    sys.exit(main())
