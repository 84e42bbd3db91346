"""A node that lost its disk: refused as a voter, rejoined with --rejoin as a
learner, caught up, and a voter again — with every job intact.

Real dpq-node processes: the node is killed with SIGKILL and its data folder
removed (what a failed disk leaves), while a producer keeps enqueueing.
"""

from __future__ import annotations

import io
import shutil
import threading
import time

import grpc
import pytest
from support.cluster import Cluster, wait_until

from dpq.cli import commands
from dpq.node import identity
from dpq.v1 import queue_pb2

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

QUEUE = "rejoin"
ARGS = ("--dead-after-ms", "3000")
BATCH = 5


@pytest.fixture
def cluster(tmp_path, pg_database):
    with Cluster(tmp_path, pg_database("rejoin"), args=ARGS) as c:
        c.wait_leader(timeout_s=60)
        yield c


class Producer:
    """Small batches, one at a time, to a random running node; bounded in count and time.
    A batch whose Enqueue failed is sent again as it was (dedup keys): none is lost or doubled."""

    def __init__(self, cluster: Cluster, max_batches: int = 400) -> None:
        self.cluster = cluster
        self.max_batches = max_batches
        self.payloads: dict[str, bytes] = {}  # job id -> payload
        self.batches = 0
        self.errors: list[str] = []
        self.running = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.running.set()
        self.thread.start()

    def stop(self) -> None:
        self.running.clear()
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the producer did not stop"

    def wait_batches(self, n: int, timeout_s: float = 120) -> None:
        target = self.batches + n
        wait_until(lambda: self.batches >= target, timeout_s, f"{n} more enqueued batches")

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        jobs = None
        while time.monotonic() < deadline and self.batches < self.max_batches and (
                self.running.is_set() or jobs is not None):
            if jobs is None:
                n = self.batches
                jobs = [queue_pb2.NewJob(queue=QUEUE, priority=1 + i % 3,
                                         payload=b"batch %d job %d" % (n, i),
                                         dedup_key=f"b{n}-{i}") for i in range(BATCH)]
            live = sorted(self.cluster.procs.copy())  # the test thread starts and stops nodes
            node = live[self.batches % len(live)]
            try:
                ids = self.cluster.stub(node).Enqueue(queue_pb2.EnqueueRequest(jobs=jobs),
                                                      timeout=20).job_ids
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED):
                    self.errors.append(f"enqueue: {exc.code()} {exc.details()}")
                time.sleep(0.1)
                continue
            with self.lock:
                for job_id, job in zip(ids, jobs, strict=True):
                    self.payloads[job_id] = job.payload
                self.batches += 1
            jobs = None
            time.sleep(0.05)


def wipe(cluster: Cluster, node: int) -> None:
    """Remove a stopped node's data folder: a lost disk."""
    shutil.rmtree(cluster.root / f"n{node}")


def start_with(cluster: Cluster, node: int, *extra: str) -> None:
    args = cluster.node_args
    cluster.node_args = (*args, *extra)
    try:
        cluster.start(node)
    finally:
        cluster.node_args = args


def behind_lines(cluster: Cluster, leader: int, node: int) -> list[str]:
    return [line for line in cluster.log_path(leader).read_text(errors="replace").splitlines()
            if "[ERROR]" in line and f"node {node} is behind" in line]


def consume_all(cluster: Cluster, expected: dict[str, bytes], timeout_s: float = 120) -> None:
    """Every job comes back exactly once, with its payload; then acked."""
    seen: dict[str, bytes] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < len(expected) and time.monotonic() < deadline:
        for node in sorted(cluster.procs):
            request = queue_pb2.DequeueRequest(queue=QUEUE, max_jobs=100, wait_ms=200,
                                               lease_ms=120_000, consumer_id=f"c{node}")
            try:
                jobs = cluster.stub(node).Dequeue(request, timeout=10).jobs
                for job in jobs:
                    assert job.job_id not in seen, f"job {job.job_id} delivered twice"
                    seen[job.job_id] = job.payload
                if jobs:
                    refs = [queue_pb2.JobRef(job_id=j.job_id, attempt=j.attempt,
                                             receipt=j.receipt) for j in jobs]
                    results = cluster.stub(node).Ack(queue_pb2.AckRequest(jobs=refs),
                                                     timeout=20).results
                    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
            except grpc.RpcError as exc:
                assert exc.code() in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED), exc
    missing = set(expected) - set(seen)
    assert not missing, f"{len(missing)} of {len(expected)} jobs never came back"
    assert set(seen) == set(expected)
    assert all(seen[j] == expected[j] for j in expected), "a payload changed"


def lose_disk_and_rejoin(cluster: Cluster, producer: Producer, node: int,
                         behind_errors: int) -> None:
    """``node`` is stopped (or killed) by the caller: wipe, refuse, rejoin, check.
    ``behind_errors``: "is behind" lines expected from the leader (1 when it had
    recorded the node's progress before the loss, else 0)."""
    wipe(cluster, node)
    producer.wait_batches(10)
    leader = cluster.wait_leader(timeout_s=60)
    assert leader != node

    # Without --rejoin: one line naming the recovery, exit 2, nothing written.
    start_with(cluster, node)
    proc = cluster.procs.pop(node)
    assert proc.wait(60) == 2, cluster.log_tail(node)
    refusal = [line for line in cluster.log_tail(node).splitlines() if "--rejoin" in line]
    assert len(refusal) == 1 and f"dpq-node {node}:" in refusal[0], cluster.log_tail(node)
    assert "must not vote" in refusal[0]
    folder = cluster.root / f"n{node}"
    assert not (folder / identity.IDENTITY_FILE).exists()

    # With --rejoin: a learner that catches up while the producer runs.
    start_with(cluster, node, "--rejoin")
    wait_until(lambda: cluster.info(node).node_id == node, 60, f"node {node} serving")
    producer.wait_batches(10)

    def voter_again() -> bool:
        info = cluster.info(leader)
        row = next(n for n in info.nodes if n.node_id == node)
        return info.leader_id == leader and not row.learner and row.behind == 0
    wait_until(voter_again, 120, f"node {node} caught up and a voter again", interval_s=0.2)
    producer.stop()
    assert not producer.errors, producer.errors

    # At the leader's commit index, no longer rejoining, in every view.
    def level() -> bool:
        head = next(n for n in cluster.info(leader).nodes if n.node_id == leader).commit_index
        mine = cluster.info(node)
        me = next(n for n in mine.nodes if n.node_id == node)
        return me.commit_index == head and me.applied_index == head and not me.learner
    wait_until(level, 60, f"node {node} at the leader's commit index", interval_s=0.2)
    assert not cluster.report(node).learner
    assert not (folder / identity.REJOIN_MARKER).exists()
    assert len(behind_lines(cluster, leader, node)) == behind_errors, cluster.log_tail(leader, 80)
    learner_lines = [line for line in cluster.log_path(leader).read_text().splitlines()
                     if f"node {node} rejoins as a non-voting learner" in line]
    assert len(learner_lines) == 1, cluster.log_tail(leader, 80)
    assert "votes again" in cluster.log_path(node).read_text(errors="replace")

    consume_all(cluster, dict(producer.payloads))


def test_a_follower_that_lost_its_disk_rejoins_as_a_learner_and_votes_again(cluster):
    producer = Producer(cluster)
    producer.start()
    producer.wait_batches(10)
    leader = cluster.wait_leader()
    follower = next(i for i in cluster.ids if i != leader)
    cluster.kill(follower)
    producer.wait_batches(5)

    # The leader shows a follower that is behind, and by how much (ClusterInfo, dpq status).
    def lagging() -> int:
        row = next(n for n in cluster.info(leader).nodes if n.node_id == follower)
        return row.behind
    behind = wait_until(lagging, 60, f"the leader to show node {follower} behind")
    out = io.StringIO()
    assert commands.status(cluster.addresses[leader], out=out) == 0
    table = out.getvalue().splitlines()
    assert table[1].split()[-1] == "behind", out.getvalue()
    row = next(line.split() for line in table[2:] if line.split()[0] == str(follower))
    assert int(row[-1]) >= behind > 0, out.getvalue()

    lose_disk_and_rejoin(cluster, producer, follower, behind_errors=1)


def test_a_former_leader_that_lost_its_disk_rejoins_as_a_learner(cluster):
    producer = Producer(cluster)
    producer.start()
    producer.wait_batches(10)
    old = cluster.wait_leader()
    cluster.stop(old)
    new = cluster.wait_leader(timeout_s=60, among=[i for i in cluster.ids if i != old])
    assert new != old
    producer.wait_batches(5)
    # The new leader never heard from the old one: it recorded nothing to be behind of.
    lose_disk_and_rejoin(cluster, producer, old, behind_errors=0)


def test_rejoin_is_refused_for_a_node_that_still_has_its_data(cluster):
    node = cluster.wait_leader() % 3 + 1
    cluster.stop(node)
    start_with(cluster, node, "--rejoin")
    proc = cluster.procs.pop(node)
    assert proc.wait(60) == 2, cluster.log_tail(node)
    refusal = [line for line in cluster.log_tail(node).splitlines() if "--rejoin" in line]
    assert len(refusal) == 1 and "nothing to rejoin" in refusal[0], cluster.log_tail(node)
