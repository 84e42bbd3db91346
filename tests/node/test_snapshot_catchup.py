"""A follower down for longer than the log is kept catches up by snapshot, under load.

Real dpq-node processes with a small ``--snapshot-every-slots``: a producer and a
consumer keep running while one follower is killed (SIGKILL, its data folder
kept), the leader snapshots and compacts its log past everything the follower
holds, and the follower is started again with the same command line. It must
reach the leader's commit index by installing a snapshot, and every job whose
Enqueue returned must be consumed exactly once, with its payload.

The leader's longest event-loop stall is printed (``pytest -s``), not asserted:
the tests make no timing assertions; ``bench/snapshot_stall.py`` measures it.
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter

import grpc
import pytest
from support.cluster import Cluster, wait_until

from dpq.cli import commands
from dpq.v1 import queue_pb2

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

QUEUE = "catchup"
SNAPSHOT_EVERY = 100
ARGS = ("--snapshot-every-slots", str(SNAPSHOT_EVERY), "--dead-after-ms", "3000")
BATCH = 10
LEASE_MS = 15_000  # a Dequeue whose answer is lost gives its jobs back after this
# CANCELLED: the test stopped that node, and Cluster.stop closes the node's channel under
# a call this thread had in flight on it ("Channel closed!").
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
           grpc.StatusCode.CANCELLED)


@pytest.fixture
def cluster(tmp_path, pg_database):
    with Cluster(tmp_path, pg_database("catchup"), args=ARGS) as c:
        c.wait_leader(timeout_s=60)
        yield c


class Load:
    """One producer and one consumer thread on the running nodes, bounded in count and time.

    The producer sends a batch whose Enqueue failed again as it was (dedup keys): none
    is lost or doubled. The consumer acks what it gets at once; an Ack whose answer was
    lost is retried, and its jobs are recorded as ``ack_unknown`` (the first try may
    have landed, and then the retry is refused)."""

    def __init__(self, cluster: Cluster, max_batches: int = 3000, max_s: float = 150) -> None:
        self.cluster = cluster
        self.max_batches = max_batches
        self.max_s = max_s
        self.payloads: dict[int, bytes] = {}  # acknowledged enqueues: job id -> payload
        self.delivered: Counter[int] = Counter()
        self.acked: Counter[int] = Counter()
        self.ack_unknown: set[int] = set()
        self.wrong_payloads: list[int] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.producing = threading.Event()
        self.consuming = threading.Event()
        self.threads = [threading.Thread(target=self._produce, daemon=True),
                        threading.Thread(target=self._consume, daemon=True)]

    def live(self) -> list[int]:
        return sorted(self.cluster.procs.copy())  # the test thread starts and stops nodes

    def start(self) -> None:
        self.producing.set()
        self.consuming.set()
        for t in self.threads:
            t.start()

    def enqueued(self) -> int:
        with self.lock:
            return len(self.payloads)

    def stop_producing(self) -> None:
        self.producing.clear()
        self.threads[0].join(timeout=120)
        assert not self.threads[0].is_alive(), "the producer did not stop"

    def stop(self) -> None:
        self.stop_producing()
        self.consuming.clear()
        self.threads[1].join(timeout=120)
        assert not self.threads[1].is_alive(), "the consumer did not stop"

    def _produce(self) -> None:
        deadline = time.monotonic() + self.max_s
        batches, jobs = 0, None
        while time.monotonic() < deadline and batches < self.max_batches and (
                self.producing.is_set() or jobs is not None):
            if jobs is None:
                jobs = [queue_pb2.NewJob(queue=QUEUE, priority=1 + i % 5,
                                         payload=b"batch %d job %d" % (batches, i),
                                         dedup_key=f"b{batches}-{i}") for i in range(BATCH)]
            live = self.live()
            node = live[batches % len(live)]
            try:
                ids = self.cluster.stub(node).Enqueue(queue_pb2.EnqueueRequest(jobs=jobs),
                                                      timeout=20).job_ids
            except grpc.RpcError as exc:
                if exc.code() not in RETRIED:
                    self.errors.append(f"enqueue@{node}: {exc.code()} {exc.details()}")
                time.sleep(0.05)
                continue
            except ValueError:  # its channel was closed (the node stopped) as the call began
                time.sleep(0.05)
                continue
            with self.lock:
                for job_id, job in zip(ids, jobs, strict=True):
                    self.payloads[job_id] = job.payload
            batches += 1
            jobs = None

    def _consume(self) -> None:
        deadline = time.monotonic() + self.max_s + 60
        turn = 0
        while self.consuming.is_set() and time.monotonic() < deadline:
            live = self.live()
            node = live[turn % len(live)]
            turn += 1
            request = queue_pb2.DequeueRequest(queue=QUEUE, max_jobs=50, wait_ms=100,
                                               lease_ms=LEASE_MS, consumer_id=f"c{node}")
            try:
                jobs = self.cluster.stub(node).Dequeue(request, timeout=20).jobs
            except grpc.RpcError as exc:
                if exc.code() not in RETRIED:
                    self.errors.append(f"dequeue@{node}: {exc.code()} {exc.details()}")
                time.sleep(0.05)
                continue
            except ValueError:  # its channel was closed (the node stopped) as the call began
                time.sleep(0.05)
                continue
            if not jobs:
                continue
            with self.lock:
                for job in jobs:
                    self.delivered[job.job_id] += 1
                    if self.payloads.get(job.job_id, job.payload) != job.payload:
                        self.wrong_payloads.append(job.job_id)
            self._ack(jobs)

    def _ack(self, jobs) -> None:
        refs = [queue_pb2.JobRef(job_id=j.job_id, attempt=j.attempt, receipt=j.receipt)
                for j in jobs]
        for attempt in range(5):
            live = self.live()
            node = live[attempt % len(live)]
            try:
                results = self.cluster.stub(node).Ack(queue_pb2.AckRequest(jobs=refs),
                                                      timeout=20).results
            except grpc.RpcError as exc:
                if exc.code() not in RETRIED:
                    self.errors.append(f"ack@{node}: {exc.code()} {exc.details()}")
                with self.lock:
                    self.ack_unknown.update(r.job_id for r in refs)
                time.sleep(0.05)
                continue
            except ValueError:  # its channel was closed (the node stopped) as the call began
                time.sleep(0.05)
                continue
            with self.lock:
                for ref, result in zip(refs, results, strict=True):
                    if result.ok:
                        self.acked[ref.job_id] += 1
                    elif ref.job_id not in self.ack_unknown:
                        self.errors.append(f"ack of job {ref.job_id} refused: {result.error}")
            return


def row(info: queue_pb2.ClusterInfoResponse, node: int) -> queue_pb2.NodeInfo:
    return next(n for n in info.nodes if n.node_id == node)


def test_a_follower_down_past_compaction_catches_up_by_snapshot_under_load(cluster):
    started = time.monotonic()
    load = Load(cluster)
    load.start()
    wait_until(lambda: load.enqueued() >= 200 and sum(load.acked.values()) >= 50, 60,
               "the load to get going")
    leader = cluster.wait_leader()
    follower = next(i for i in cluster.ids if i != leader)
    cluster.kill(follower)

    # Everything the follower may hold is at most the leader's commit index now, or the
    # match index it recorded for the follower, plus the few slots in flight at the kill.
    info = cluster.info(leader)
    held = max(row(info, leader).commit_index, row(info, follower).commit_index)
    target = held + SNAPSHOT_EVERY

    def compacted_past_it() -> int:
        me = row(cluster.info(leader), leader)
        return me.snapshot_slot if me.snapshot_slot > target else 0
    snapshot_slot = wait_until(compacted_past_it, 90,
                               f"the leader to snapshot past slot {target}", interval_s=0.1)

    # The same command line, with its old data folder, while the load goes on.
    cluster.start(follower)
    restarted = time.monotonic()
    wait_until(lambda: cluster.info(follower).node_id == follower, 60, f"node {follower} serving")

    def caught_up() -> bool:
        head = row(cluster.info(leader), leader).commit_index  # read first: it only grows
        me = row(cluster.info(follower), follower)
        return me.commit_index >= head and me.applied_index >= head
    wait_until(caught_up, 90, f"node {follower} at the leader's commit index", interval_s=0.1)
    caught_up_s = time.monotonic() - restarted
    mine = row(cluster.info(follower), follower)
    assert mine.snapshots_installed >= 1, f"node {follower} caught up without a snapshot: {mine}"
    assert mine.snapshot_slot >= snapshot_slot > held, (mine, snapshot_slot, held)
    # The same in its health report (what a gateway shows) and in `dpq status`.
    assert cluster.report(follower).snapshots_installed >= mine.snapshots_installed
    out = io.StringIO()
    assert commands.status(cluster.addresses[follower], out=out) == 0
    table = [line.split() for line in out.getvalue().splitlines()[1:]]
    column = table[0].index("installed")
    assert int(next(r for r in table if r[0] == str(follower))[column]) >= 1, out.getvalue()
    enqueued_while_back = load.enqueued()
    wait_until(lambda: load.enqueued() >= enqueued_while_back + 50, 60,
               "enqueues to go on with the follower back")

    # Drain: every acknowledged enqueue comes back and is acked.
    load.stop_producing()
    expected = dict(load.payloads)
    wait_until(lambda: set(expected) <= set(load.acked) | load.ack_unknown, 90,
               f"all {len(expected)} enqueued jobs to be consumed", interval_s=0.2)

    def empty_everywhere() -> bool:
        for node in cluster.ids:
            queues = cluster.stub(node).Stats(queue_pb2.StatsRequest(queue=QUEUE),
                                              timeout=5).queues
            if any(sum(q.ready_by_priority) or q.delayed or q.leased or q.dead for q in queues):
                return False
        return True
    wait_until(empty_everywhere, 60, "nothing left in the queue on any node", interval_s=0.2)
    load.stop()

    leader_row = row(cluster.info(leader), leader)
    print(f"\nleader node {leader}: max event-loop stall {leader_row.max_loop_stall_ms:.1f} ms, "
          f"snapshot slot {leader_row.snapshot_slot}; node {follower} (restarted): max stall "
          f"{mine.max_loop_stall_ms:.1f} ms, {mine.snapshots_installed} snapshot(s) installed, "
          f"caught up in {caught_up_s:.1f} s; {len(expected)} jobs, "
          f"{sum(load.delivered.values())} deliveries, test {time.monotonic() - started:.0f} s")

    assert not load.errors, load.errors[:5]
    assert not load.wrong_payloads, f"payloads changed: {load.wrong_payloads[:10]}"
    assert set(load.delivered) == set(expected), "a job was delivered that nobody enqueued"
    twice = [j for j, n in load.acked.items() if n > 1]
    assert not twice, f"jobs acked twice: {twice[:10]}"
    again = [j for j, n in load.delivered.items() if n > 1 and j not in load.ack_unknown]
    assert not again, f"jobs delivered twice though their ack was answered: {again[:10]}"
