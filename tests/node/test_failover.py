"""Losing the leader under load, and losing every node at once.

Real dpq-node processes, killed with SIGKILL: nothing gets to flush or say
goodbye. What must hold: every job whose Enqueue returned is delivered and,
once acked, gone from PostgreSQL; no job is acked twice; a full crash loses
no job.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import grpc
import psycopg
import pytest
from support.cluster import Cluster, wait_until

from dpq.v1 import queue_pb2

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

QUEUE = "failover"
ARGS = ("--dead-after-ms", "1500", "--max-attempts", "100")


@pytest.fixture
def cluster(tmp_path, pg_database):
    with Cluster(tmp_path, pg_database("failover"), args=ARGS) as c:
        c.wait_leader()
        yield c


class Load:
    """Producers and consumers on threads, each loop bounded in time."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.enqueued: list[int] = []
        self.acked: Counter[int] = Counter()
        # jobs whose Ack call failed without an answer (e.g. the leader died):
        # acked or not, only the end state of the queue can tell
        self.ack_unknown: set[int] = set()
        self.delivered: Counter[int] = Counter()
        self.producing = threading.Event()
        self.consuming = threading.Event()
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def live(self) -> list[int]:
        return sorted(self.cluster.procs)

    def produce(self, seed: int) -> None:
        # Each job has a dedup key, and a batch whose Enqueue failed is sent
        # again as it was: a batch committed just before the leader died comes
        # back with its ids instead of being enqueued twice.
        rng = random.Random(seed)
        deadline = time.monotonic() + 60
        batch_no = 0
        jobs = None
        while time.monotonic() < deadline and (self.producing.is_set() or jobs is not None):
            if jobs is None:
                batch_no += 1
                jobs = [queue_pb2.NewJob(queue=QUEUE, priority=rng.randint(1, 5),
                                         payload=b"%d" % seed,
                                         dedup_key=f"p{seed}-{batch_no}-{i}") for i in range(20)]
            node = rng.choice(self.live())
            try:
                ids = self.cluster.stub(node).Enqueue(queue_pb2.EnqueueRequest(jobs=jobs),
                                                      timeout=20).job_ids
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED):
                    self.errors.append(f"enqueue: {exc.code()} {exc.details()}")
                time.sleep(0.05)
                continue
            with self.lock:
                self.enqueued.extend(ids)
            jobs = None

    def consume(self, node: int) -> None:
        deadline = time.monotonic() + 120
        while self.consuming.is_set() and time.monotonic() < deadline:
            if node not in self.cluster.procs:
                return
            request = queue_pb2.DequeueRequest(queue=QUEUE, max_jobs=50, wait_ms=300,
                                               lease_ms=2000, consumer_id=f"c{node}")
            jobs = []
            try:
                jobs = self.cluster.stub(node).Dequeue(request, timeout=10).jobs
                if not jobs:
                    continue
                with self.lock:
                    self.delivered.update(j.job_id for j in jobs)
                refs = [queue_pb2.JobRef(job_id=j.job_id, attempt=j.attempt,
                                         receipt=j.receipt) for j in jobs]
                ack_node = random.choice(self.live())
                results = self.cluster.stub(ack_node).Ack(queue_pb2.AckRequest(jobs=refs),
                                                          timeout=20).results
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED):
                    self.errors.append(f"consume@{node}: {exc.code()} {exc.details()}")
                with self.lock:
                    self.ack_unknown.update(j.job_id for j in jobs)
                time.sleep(0.05)
                continue
            with self.lock:
                self.acked.update(r.job_id for r in results if r.ok)

    def start(self, producers: int = 2) -> None:
        self.producing.set()
        self.consuming.set()
        for seed in range(producers):
            self.threads.append(threading.Thread(target=self.produce, args=(seed,), daemon=True))
        for node in self.live():
            self.threads.append(threading.Thread(target=self.consume, args=(node,), daemon=True))
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.producing.clear()
        self.consuming.clear()
        for t in self.threads:
            t.join(timeout=60)


def pending_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM jobs WHERE queue = %s", (QUEUE,)).fetchone()[0]


def test_killing_the_leader_under_load_loses_no_job(cluster):
    load = Load(cluster)
    load.start()
    wait_until(lambda: len(load.acked) >= 200, 30, "the load to get going")
    old = cluster.wait_leader()
    cluster.kill(old)
    new = cluster.wait_leader(timeout_s=15)
    assert new != old
    before = len(load.enqueued)
    wait_until(lambda: len(load.enqueued) >= before + 200, 30,
               "enqueues to go on under the new leader")
    load.producing.clear()
    wait_until(lambda: not any(t.is_alive() for t in load.threads[:2]), 60, "producers to finish")
    wait_until(lambda: set(load.enqueued) <= set(load.acked) | load.ack_unknown, 60,
               "every enqueued job to be acked")
    # An ack whose answer was lost either landed, or its jobs come back when the
    # 2-s lease runs out and are acked again: the consumers keep running until
    # nothing is left, in the queue or in PostgreSQL.
    wait_until(lambda: pending_rows(cluster.dsn) == 0, 30, "PostgreSQL to forget the acked jobs")
    load.stop()
    redelivered = sum(1 for n in load.delivered.values() if n > 1)
    print(f"enqueued {len(load.enqueued)}, acked {len(load.acked)}, redelivered {redelivered}")
    assert not load.errors, load.errors[:5]
    twice = [j for j, n in load.acked.items() if n > 1]
    assert twice == [], f"jobs acked twice: {twice[:10]}"
    # nothing committed behind a producer's back
    assert set(load.acked) | load.ack_unknown == set(load.enqueued) | load.ack_unknown
    assert len(set(load.enqueued)) == len(load.enqueued)
    assert pending_rows(cluster.dsn) == 0
    for node in cluster.procs:
        [stats] = cluster.stub(node).Stats(queue_pb2.StatsRequest(queue=QUEUE), timeout=5).queues
        counts = (sum(stats.ready_by_priority), stats.delayed, stats.leased, stats.dead)
        assert counts == (0, 0, 0, 0)


def test_a_full_crash_and_restart_loses_no_job(cluster):
    stub = cluster.stub(2)
    ids = []
    for p in range(1, 6):
        jobs = [queue_pb2.NewJob(queue=QUEUE, priority=p,
                                 payload=b"keep-%d" % i) for i in range(40)]
        ids += stub.Enqueue(queue_pb2.EnqueueRequest(jobs=jobs), timeout=20).job_ids
    # lease some and ack a few: only the unacked must come back
    taken = []
    for node in cluster.ids:
        taken += cluster.stub(node).Dequeue(queue_pb2.DequeueRequest(
            queue=QUEUE, max_jobs=10, lease_ms=1000), timeout=10).jobs
    acked = {j.job_id for j in taken[:5]}
    results = stub.Ack(queue_pb2.AckRequest(
        jobs=[queue_pb2.JobRef(job_id=j.job_id, attempt=j.attempt,
                               receipt=j.receipt) for j in taken[:5]]), timeout=10).results
    assert all(r.ok for r in results)

    for node in list(cluster.procs):
        cluster.kill(node)
    cluster.start()
    cluster.wait_leader()

    remaining = set(ids) - acked
    got: Counter[int] = Counter()

    def drained():
        for node in cluster.ids:
            jobs = cluster.stub(node).Dequeue(queue_pb2.DequeueRequest(
                queue=QUEUE, max_jobs=100, wait_ms=200, lease_ms=60_000), timeout=10).jobs
            got.update(j.job_id for j in jobs)
        return set(got) >= remaining

    wait_until(drained, 30, "every unacked job to come back after the restart")
    assert set(got) == remaining
    assert all(n == 1 for n in got.values())


def test_wait_for_postgres_returns_only_once_the_jobs_are_written(tmp_path, pg_database):
    with Cluster(tmp_path, pg_database("waitpg"), nodes=1, args=("--wait-for-postgres",)) as c:
        c.wait_leader()
        jobs = [queue_pb2.NewJob(queue="w", priority=2, payload=b"x") for _ in range(25)]
        ids = c.stub(1).Enqueue(queue_pb2.EnqueueRequest(jobs=jobs), timeout=20).job_ids
        with psycopg.connect(c.dsn) as conn:  # no waiting: the rows are there already
            rows = conn.execute("SELECT job_id FROM jobs WHERE queue = 'w'").fetchall()
        assert sorted(r[0] for r in rows) == sorted(ids)
