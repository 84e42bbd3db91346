"""How long a node's event loop stalls while snapshots are taken and sent (issue 11).

A whole-process scenario, so plain Python rather than pyperf. Each round starts a
3-node cluster (``dpq.cli.localcluster``, real ``dpq-node`` processes, no gateway) on a
fresh database of one embedded PostgreSQL, then

1. preloads ``--jobs`` jobs (batches of 1,000 to the leader), so a snapshot has
   that much state to dump;
2. runs a light producer and consumer (one thread each) and, while they run:
   kills a follower (SIGKILL, data kept), waits until the leader is
   ``--snapshot-every`` x 2 slots past what the follower held, restarts it with the
   same command line and waits until it has applied the leader's commit index;
3. reads every node's ``max_loop_stall_ms`` (the longest stall since the process
   started, from ``dpq.node.loopwatch``), ``snapshot_slot`` and ``snapshots_installed``
   from ``ClusterInfo``.

With small ``--snapshot-every`` the leader snapshots several times during step 2
and the follower catches up by ``InstallSnapshot``; ``--baseline`` adds rounds with
``--snapshot-every-slots`` so large that no snapshot is taken (the follower catches
up from the log), alternating with the others. Nodes run ``--dead-after-ms 600000``
so the killed follower's jobs are not reassigned (a Reassign of a third of the
backlog would stall the loop for reasons of its own).

It prints the machine, the leader's stall after the preload and at the end of each
round, and medians over ``--rounds``. Usage::

    python bench/snapshot_stall.py [--jobs 100000] [--rounds 3] [--snapshot-every 200]
                                   [--baseline] [--payload-bytes 100] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

# In a checkout, measure the checkout (built in place), not an installed dpq: the
# nodes import what this process imports (dpq.cli.localcluster.PACKAGE_ROOT).
_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "dpq" / "__init__.py").exists():
    sys.path.insert(0, str(_CHECKOUT))

from dpq.cli.localcluster import LocalCluster
from dpq.pg import embedded
from dpq.v1 import queue_pb2, queue_pb2_grpc

QUEUE = "stall"
NEVER = 1_000_000_000  # --snapshot-every-slots of the baseline: no snapshot is ever due
PRELOAD_BATCH = 1_000
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
           grpc.StatusCode.RESOURCE_EXHAUSTED)


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), model)
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}; "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except grpc.RpcError as exc:
            value, last = None, exc.code().name
        if value:
            return value
        time.sleep(interval_s)
    raise RuntimeError(f"timed out after {timeout_s}s waiting for {what} (last error: {last})")


class Round:
    """One cluster, one scenario; ``run`` returns the numbers."""

    def __init__(self, root: Path, dsn: str, args: argparse.Namespace, every: int) -> None:
        ports = free_ports(7)
        self.args = args
        self.every = every
        self.cluster = LocalCluster(
            root, nodes=3, dsn=dsn, ports=ports[:4], peer_ports=ports[4:],
            node_args=("--snapshot-every-slots", str(every), "--dead-after-ms", "600000"))
        self.channels: dict[int, grpc.Channel] = {}
        self.lock = threading.Lock()  # the load threads and the main thread share channels
        self.stop_load = threading.Event()
        self.enqueued = self.acked = 0

    def stub(self, node: int) -> queue_pb2_grpc.QueueStub:
        with self.lock:
            if node not in self.channels:
                self.channels[node] = self.cluster.client_channel(self.cluster.addresses[node])
            return queue_pb2_grpc.QueueStub(self.channels[node])

    def info(self, node: int) -> queue_pb2.ClusterInfoResponse:
        return self.stub(node).ClusterInfo(queue_pb2.ClusterInfoRequest(), timeout=5)

    def own(self, node: int) -> queue_pb2.NodeInfo:
        return next(n for n in self.info(node).nodes if n.node_id == node)

    def leader(self) -> int:
        def agreed() -> int:
            leaders = {self.info(i).leader_id for i in self.cluster.procs}
            return leaders.pop() if len(leaders) == 1 else 0
        return wait_until(agreed, 60, "one leader")

    def live(self) -> list[int]:
        return sorted(self.cluster.procs.copy())

    def preload(self, leader: int) -> None:
        payload = b"p" * self.args.payload_bytes
        left = self.args.jobs
        while left > 0:
            n = min(PRELOAD_BATCH, left)
            jobs = [queue_pb2.NewJob(queue=QUEUE, priority=1 + i % 5, payload=payload)
                    for i in range(n)]
            try:
                self.stub(leader).Enqueue(queue_pb2.EnqueueRequest(jobs=jobs), timeout=60)
            except grpc.RpcError as exc:
                if exc.code() not in RETRIED:
                    raise
                time.sleep(0.2)
                continue
            left -= n

    def produce(self) -> None:
        payload = b"q" * self.args.payload_bytes
        turn = 0
        while not self.stop_load.is_set():
            live = self.live()
            node = live[turn % len(live)]
            turn += 1
            jobs = [queue_pb2.NewJob(queue=QUEUE, priority=1 + i % 5, payload=payload)
                    for i in range(10)]
            try:
                self.stub(node).Enqueue(queue_pb2.EnqueueRequest(jobs=jobs), timeout=20)
                self.enqueued += len(jobs)
            except grpc.RpcError:
                time.sleep(0.05)
            time.sleep(0.01)

    def consume(self) -> None:
        turn = 0
        while not self.stop_load.is_set():
            live = self.live()
            node = live[turn % len(live)]
            turn += 1
            request = queue_pb2.DequeueRequest(queue=QUEUE, max_jobs=20, wait_ms=100,
                                               lease_ms=60_000, consumer_id="bench")
            try:
                jobs = self.stub(node).Dequeue(request, timeout=20).jobs
                if jobs:
                    refs = [queue_pb2.JobRef(job_id=j.job_id, attempt=j.attempt,
                                             receipt=j.receipt) for j in jobs]
                    self.stub(node).Ack(queue_pb2.AckRequest(jobs=refs), timeout=20)
                    self.acked += len(jobs)
            except grpc.RpcError:
                time.sleep(0.05)
            time.sleep(0.01)

    def run(self) -> dict:
        c = self.cluster
        for i in c.ids:
            c.start_node(i)
        leader = self.leader()
        t0 = time.monotonic()
        self.preload(leader)
        preload_s = time.monotonic() - t0
        after_preload = self.own(leader).max_loop_stall_ms

        load = [threading.Thread(target=self.produce, daemon=True),
                threading.Thread(target=self.consume, daemon=True)]
        for t in load:
            t.start()
        follower = next(i for i in c.ids if i != leader)
        # its channel stays: it reconnects to the restarted node
        c.stop_node(follower, signal.SIGKILL)
        info = self.info(leader)
        held = max(n.commit_index for n in info.nodes if n.node_id in (leader, follower))
        target = held + 2 * self.args.snapshot_every  # the same distance in either mode
        t1 = time.monotonic()
        wait_until(lambda: self.own(leader).commit_index >= target, 300,
                   f"the leader's commit index to pass {target}")
        down_s = time.monotonic() - t1

        c.start_node(follower)
        t2 = time.monotonic()

        def caught_up() -> bool:
            head = self.own(leader).commit_index
            return self.own(follower).applied_index >= head
        wait_until(caught_up, 300, f"node {follower} to catch up")
        catch_up_s = time.monotonic() - t2
        time.sleep(1.0)  # the load runs on a little with the follower back
        self.stop_load.set()
        for t in load:
            t.join(timeout=60)
        rows = {i: self.own(i) for i in c.ids}
        return {
            "snapshot_every": self.every, "jobs": self.args.jobs, "preload_s": preload_s,
            "leader": leader, "follower": follower,
            "leader_stall_after_preload_ms": after_preload,
            "leader_stall_ms": rows[leader].max_loop_stall_ms,
            "follower_stall_ms": rows[follower].max_loop_stall_ms,
            "other_stall_ms": max(r.max_loop_stall_ms for i, r in rows.items()
                                  if i not in (leader, follower)),
            "leader_snapshot_slot": rows[leader].snapshot_slot,
            "leader_commit": rows[leader].commit_index,
            "follower_snapshots_installed": rows[follower].snapshots_installed,
            "down_s": down_s, "catch_up_s": catch_up_s,
            "load_enqueued": self.enqueued, "load_acked": self.acked,
        }

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        self.cluster.stop()


def report(mode: str, results: list[dict]) -> dict:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in results)
    summary = {key: med(key) for key in (
        "leader_stall_after_preload_ms", "leader_stall_ms", "follower_stall_ms",
        "other_stall_ms", "catch_up_s", "preload_s", "follower_snapshots_installed",
        "leader_snapshot_slot")}
    print(f"{mode:>9}: leader max stall {summary['leader_stall_ms']:7.1f} ms "
          f"(after the preload {summary['leader_stall_after_preload_ms']:.1f}), "
          f"restarted follower {summary['follower_stall_ms']:.1f} ms, "
          f"other follower {summary['other_stall_ms']:.1f} ms; follower caught up in "
          f"{summary['catch_up_s']:.1f} s with {summary['follower_snapshots_installed']:.0f} "
          f"snapshot(s); leader's last snapshot at slot {summary['leader_snapshot_slot']:.0f}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs preloaded (100000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode; medians (3)")
    parser.add_argument("--snapshot-every", type=int, default=200,
                        help="--snapshot-every-slots of the nodes (200)")
    parser.add_argument("--baseline", action="store_true",
                        help=f"also rounds with --snapshot-every-slots {NEVER} (no snapshots)")
    parser.add_argument("--payload-bytes", type=int, default=100, help="bytes per job (100)")
    parser.add_argument("--json", help="write every round's numbers to this file")
    args = parser.parse_args(argv)

    print(f"machine: {machine()}")
    print(f"3 nodes, {args.jobs} jobs of {args.payload_bytes} B preloaded, "
          f"--snapshot-every-slots {args.snapshot_every}, {args.rounds} round(s)"
          + (f", baseline --snapshot-every-slots {NEVER}" if args.baseline else ""))
    modes = [("snapshots", args.snapshot_every)]
    if args.baseline:
        modes.append(("baseline", NEVER))
    results: dict[str, list[dict]] = {mode: [] for mode, _ in modes}
    with tempfile.TemporaryDirectory(prefix="dpq-stall-") as tmp:
        pg = embedded.start(Path(tmp) / "postgres", database="stall_setup")
        try:
            for n in range(args.rounds):
                for mode, every in modes:  # alternate, so drift hits both alike
                    db = embedded.start(pg.data_dir, database=f"stall_{mode}_{n}")
                    bench = Round(Path(tmp) / f"{mode}-{n}", db.dsn, args, every)
                    try:
                        r = bench.run()
                    finally:
                        bench.close()
                        db.stop()
                    results[mode].append(r)
                    print(f"  round {n + 1} {mode:>9}: leader stall {r['leader_stall_ms']:.1f} ms"
                          f" (after preload {r['leader_stall_after_preload_ms']:.1f}), follower "
                          f"{r['follower_stall_ms']:.1f} ms, installed "
                          f"{r['follower_snapshots_installed']}, leader snapshot slot "
                          f"{r['leader_snapshot_slot']} of {r['leader_commit']}, preload "
                          f"{r['preload_s']:.1f} s, down {r['down_s']:.1f} s, catch-up "
                          f"{r['catch_up_s']:.1f} s", flush=True)
        finally:
            pg.stop()
    print(f"medians over {args.rounds} round(s):")
    summaries = {mode: report(mode, rs) for mode, rs in results.items()}
    if args.baseline:
        ratio = (summaries["snapshots"]["leader_stall_ms"]
                 / max(summaries["baseline"]["leader_stall_ms"], 1e-9))
        print(f"leader max stall, snapshots / baseline: {ratio:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "args": vars(args), "rounds": results,
                       "medians": summaries}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
