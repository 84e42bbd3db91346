"""What the benchmark reads from outside the processes it measures.

- Counters: every node's first ``Replication.WatchHealth`` report (running
  totals: Paxos syncs and synced entries, proposals and commands, writer
  transactions and rows, …) and the gateway's ``ClusterInfo().counters``.
  A phase's figures are the differences of two snapshots.
- CPU seconds (user + system, all threads) by process kind, with psutil
  (``/proc``: 10-ms ticks, so tiny runs read coarse). A
  PostgreSQL server is a tree: the postmaster, its live children (backends,
  checkpointer, WAL writer, …) and the children it has already reaped (their
  time is in its ``children_user``/``children_system``), so the total only
  grows and two readings subtract cleanly.
- PostgreSQL: its settings, and how far the leader's writer has come
  (``dpq_cluster.applied_slot``) against the slot the leader has applied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
import psutil
import psycopg

from dpq.v1 import queue_pb2, queue_pb2_grpc, replication_pb2, replication_pb2_grpc

# ------------------------------------------------------------------- counters

def node_report(address: str, timeout_s: float = 10) -> replication_pb2.NodeHealthReport:
    """The first health report of the node at ``address``."""
    with grpc.insecure_channel(address) as channel:
        stub = replication_pb2_grpc.ReplicationStub(channel)
        call = stub.WatchHealth(replication_pb2.HealthRequest(interval_ms=1000), timeout=timeout_s)
        try:
            report = next(call)
        finally:
            call.cancel()
    return report


def gateway_info(address: str, timeout_s: float = 10) -> queue_pb2.ClusterInfoResponse:
    with grpc.insecure_channel(address) as channel:
        return queue_pb2_grpc.QueueStub(channel).ClusterInfo(queue_pb2.ClusterInfoRequest(),
                                                              timeout=timeout_s)


@dataclass(frozen=True, slots=True)
class Counters:
    """One snapshot: per node id, and the gateway's; each node's view of the leadership."""

    nodes: dict[int, dict[str, float]]
    gateway: dict[str, float]
    views: dict[int, tuple[str, int, str]]  # node id -> (role, leader id, ballot)


def snapshot_counters(gateway: str, nodes: dict[int, str]) -> Counters:
    info = gateway_info(gateway)
    reports = {i: node_report(a) for i, a in sorted(nodes.items())}
    return Counters({i: dict(r.counters) for i, r in reports.items()}, dict(info.counters),
                    {i: (r.role, r.leader_id, r.ballot) for i, r in reports.items()})


def counter_deltas(before: Counters, after: Counters) -> dict[str, object]:
    """Per-phase totals over all nodes, per node, and the batch sizes they imply."""
    per_node: dict[str, dict[str, float]] = {}
    total: dict[str, float] = {}
    for i, end in after.nodes.items():
        start = before.nodes.get(i, {})
        d = {k: v - start.get(k, 0.0) for k, v in sorted(end.items())
             if not k.startswith("state.")}  # state.* are levels, not totals
        per_node[str(i)] = d
        for k, v in d.items():
            total[k] = total.get(k, 0.0) + v
    gw = {k: v - before.gateway.get(k, 0.0) for k, v in sorted(after.gateway.items())}

    def per(a: float, b: float) -> float | None:
        return a / b if b else None

    leaders = {"before": {str(i): list(v) for i, v in before.views.items()},
               "after": {str(i): list(v) for i, v in after.views.items()}}
    return {
        "total": total,
        "per_node": per_node,
        "leadership": leaders,
        # A new ballot means an election happened during the phase: its figures include it.
        "ballot_changed": any(before.views.get(i, (None, None, None))[2] != v[2]
                              for i, v in after.views.items()),
        "gateway": gw,
        "batch_sizes": {
            "paxos_entries_per_sync": per(total.get("paxos.synced_entries", 0),
                                          total.get("paxos.syncs", 0)),
            "commands_per_proposal": per(total.get("proposer.commands", 0),
                                         total.get("proposer.proposals", 0)),
            "writer_rows_per_transaction": per(total.get("writer.rows", 0),
                                               total.get("writer.transactions", 0)),
            # The gateway's proposals to the leader ("gateway.batches" before it used the Proposer).
            "gateway_jobs_per_proposal": per(gw.get("gateway.jobs", 0),
                                             gw.get("gateway.proposals",
                                                    gw.get("gateway.batches", 0))),
            "gateway_requests_per_proposal": per(gw.get("gateway.requests", 0),
                                                 gw.get("gateway.proposals", 0)),
        },
    }


#: gRPC methods by hop, as the servers count them (``dpq.services.counting``):
#: each message is counted once, by the server that receives it or sends it.
HOPS: dict[str, tuple[str, ...]] = {
    "producers -> gateway": ("Queue/Enqueue", "Queue/EnqueueStream"),
    "proposals to the leader": ("Replication/Propose", "Replication/ProposeStream"),
    "Paxos between nodes": ("Replication/Stream",),
    "consumers <-> nodes": ("Queue/Dequeue", "Queue/Ack", "Queue/Nack", "Queue/ExtendLease",
                            "Queue/Consume"),
}


def messages_per_job(deltas: dict[str, object], jobs: int) -> dict[str, float | None]:
    """gRPC messages (in and out) per job at every hop, from :func:`counter_deltas`,
    and all of them together (health reports and the rest included)."""
    counts: dict[str, float] = {}
    for source in (deltas["total"], deltas["gateway"]):
        for key, n in source.items():  # type: ignore[union-attr]
            if key.startswith(("rpc.in.", "rpc.out.")):
                method = key.split(".", 2)[2]
                counts[method] = counts.get(method, 0.0) + n
    per = {hop: (sum(counts.get(m, 0.0) for m in methods) / jobs if jobs else None)
           for hop, methods in HOPS.items()}
    per["all gRPC messages"] = sum(counts.values()) / jobs if jobs else None
    return per


# ------------------------------------------------------------------------ CPU

class ProcessCpu:
    """CPU seconds used so far by one process; with ``tree``, by it and all its children."""

    def __init__(self, pid: int, tree: bool = False) -> None:
        self.pid = pid
        self.tree = tree
        self._proc = psutil.Process(pid)

    def seconds(self) -> float:
        t = self._proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        if self.tree:
            for child in self._proc.children(recursive=True):
                try:
                    c = child.cpu_times()
                except psutil.Error:  # gone since the listing: reaped, counted above next time
                    continue
                total += c.user + c.system
        return total


class CpuMeter:
    """CPU seconds by process kind (``{"nodes": [...], "gateway": [...], ...}``)."""

    def __init__(self, kinds: dict[str, list[ProcessCpu]]) -> None:
        self.kinds = kinds

    def read(self) -> dict[str, float]:
        out = {}
        for kind, procs in self.kinds.items():
            total = 0.0
            for p in procs:
                try:
                    total += p.seconds()
                except psutil.Error:
                    pass  # a process that ended: the phase fails on it elsewhere
            out[kind] = total
        return out


def own_cpu() -> float:
    return time.process_time()


# ----------------------------------------------------------------- PostgreSQL

def postgres_info(dsn: str) -> dict[str, object]:
    """Version and durability settings; ``postmaster_pid`` when the server runs on this machine."""
    postmaster = None
    with psycopg.connect(dsn, autocommit=True) as conn:
        version, fsync, sync_commit, wal_sync, backend = conn.execute(
            "SELECT current_setting('server_version'), current_setting('fsync'), "
            "current_setting('synchronous_commit'), current_setting('wal_sync_method'), "
            "pg_backend_pid()").fetchone()
        try:  # while the connection is open: its backend exits with it
            parent = psutil.Process(backend).parent()
            if parent is not None and "postgres" in " ".join(parent.cmdline()).lower():
                postmaster = parent.pid
        except psutil.Error:
            pass  # not on this machine (or not ours to read): no PostgreSQL CPU figure
    return {"version": version, "fsync": fsync, "synchronous_commit": sync_commit,
            "wal_sync_method": wal_sync, "postmaster_pid": postmaster}


def pg_written(dsn: str) -> tuple[int, int]:
    """``(dpq_cluster.applied_slot, rows in jobs)``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        slot, rows = conn.execute(
            "SELECT (SELECT applied_slot FROM dpq_cluster WHERE id = 1), "
            "(SELECT count(*) FROM jobs)").fetchone()
    return slot, rows


def wait_written(dsn: str, rows: int, timeout_s: float) -> tuple[float | None, int, int]:
    """Wait until PostgreSQL's ``jobs`` holds ``rows`` rows (the queue as the cluster has it):
    the seconds waited (None after ``timeout_s``), the rows and ``applied_slot`` then.

    Rows, not slots: the leader does not write a slot that holds only its own
    Checkpoint, so ``applied_slot`` stays a little behind on an idle cluster.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    while True:
        slot, now_rows = pg_written(dsn)
        if now_rows == rows:
            return time.monotonic() - t0, now_rows, slot
        if time.monotonic() > deadline:
            return None, now_rows, slot
        time.sleep(0.02)
