"""The gateway spreads new jobs by live health; backlogs move to where consumers wait.

Real dpq-node and dpq-gateway processes. Shares are read from the gateway's
own ClusterInfo (``assigned_jobs`` per node), and the delivery checks from
what consumers actually receive. How a node's reported CPU shrinks its share
is tested in one event loop on a fake clock (tests/gateway/test_owners.py),
with no CPU burner.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from support.cluster import Cluster, wait_until

from dpq.v1 import queue_pb2

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

ARGS = ("--dead-after-ms", "1500")


def start(tmp_path, dsn, **kw) -> Cluster:
    cluster = Cluster(tmp_path, dsn, args=ARGS, **kw)
    cluster.start()
    cluster.start_gateway()
    cluster.wait_leader()
    wait_until(lambda: all(n.reachable and n.balancer_weight for n in cluster.gateway_info().nodes),
               15, "the gateway to hear from every node")
    return cluster


def assigned(cluster: Cluster) -> dict[int, int]:
    return {n.node_id: n.assigned_jobs for n in cluster.gateway_info().nodes}


def enqueue_through_gateway(cluster: Cluster, queue: str, jobs: int,
                            per_call: int = 10) -> list[int]:
    ids = []
    stub = cluster.gateway_stub()
    for _ in range(jobs // per_call):
        request = queue_pb2.EnqueueRequest(jobs=[
            queue_pb2.NewJob(queue=queue, priority=3, payload=b"j") for _ in range(per_call)])
        ids += stub.Enqueue(request, timeout=15).job_ids
    return ids


def gateway_view(cluster: Cluster, field: str) -> dict[int, object]:
    """One field of each node as the gateway sees it, by node id."""
    return {n.node_id: getattr(n, field) for n in cluster.gateway_info().nodes}


def share_of(before: dict[int, int], after: dict[int, int]) -> dict[int, float]:
    delta = {n: after[n] - before.get(n, 0) for n in after}
    total = sum(delta.values())
    assert total > 0
    return {n: d / total for n, d in delta.items()}


class Consumers:
    """Long-polling consumer threads on chosen nodes; each loop bounded in time."""

    def __init__(self, cluster: Cluster, queue: str, nodes: list[int], per_node: int = 1) -> None:
        self.cluster, self.queue = cluster, queue
        self.got: list[int] = []
        self.running = threading.Event()
        self.running.set()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                        for n in nodes for _ in range(per_node)]
        for t in self.threads:
            t.start()

    def _run(self, node: int) -> None:
        stub = self.cluster.stub(node)
        deadline = time.monotonic() + 90
        while self.running.is_set() and time.monotonic() < deadline:
            try:
                jobs = stub.Dequeue(queue_pb2.DequeueRequest(
                    queue=self.queue, max_jobs=20, wait_ms=500, lease_ms=30_000), timeout=10).jobs
                if jobs:
                    stub.Ack(queue_pb2.AckRequest(jobs=[
                        queue_pb2.JobRef(job_id=j.job_id, attempt=j.attempt,
                                         receipt=j.receipt) for j in jobs]), timeout=10)
            except grpc.RpcError:
                time.sleep(0.05)
                continue
            with self.lock:
                self.got.extend(j.job_id for j in jobs)

    def stop(self) -> None:
        self.running.clear()
        for t in self.threads:
            t.join(timeout=15)


def test_new_jobs_go_where_consumers_wait(tmp_path, pg_database):
    cluster = start(tmp_path, pg_database("waiting"))
    try:
        consumers = Consumers(cluster, "w", nodes=[2], per_node=6)
        wait_until(lambda: gateway_view(cluster, "waiting_consumers")[2] >= 4,
                   10, "the gateway to see consumers waiting on node 2")
        before = assigned(cluster)
        ids = enqueue_through_gateway(cluster, "w", 400)
        share = share_of(before, assigned(cluster))
        assert share[2] > 0.5 and share[2] > share[1] and share[2] > share[3], share
        wait_until(lambda: set(ids) <= set(consumers.got), 30,
                   "node 2's consumers to get every job")
        consumers.stop()
    finally:
        cluster.stop_all()


@pytest.fixture
def cluster(tmp_path, pg_database):
    c = start(tmp_path, pg_database("dead"))
    yield c
    c.stop_all()


def test_a_killed_node_gets_no_new_jobs_and_its_jobs_are_served_elsewhere(cluster):
    left_behind = enqueue_through_gateway(cluster, "dead", 90)
    victim = next(i for i in cluster.ids if i != cluster.wait_leader())
    cluster.kill(victim)
    wait_until(lambda: gateway_view(cluster, "balancer_weight")[victim] == 0,
               10, "the gateway to drop the killed node")
    before = assigned(cluster)
    new = enqueue_through_gateway(cluster, "dead", 200)
    after = assigned(cluster)
    assert after[victim] == before[victim]
    consumers = Consumers(cluster, "dead", nodes=sorted(cluster.procs))
    try:
        wait_until(lambda: set(left_behind + new) <= set(consumers.got), 30,
                   "the live nodes to serve every job, the dead node's too")
    finally:
        consumers.stop()


def test_a_backlog_on_a_node_without_consumers_is_drained_by_the_others(cluster):
    ids = enqueue_through_gateway(cluster, "backlog", 300)
    owners = {n.node_id: n.assigned_jobs for n in cluster.gateway_info().nodes}
    assert sum(1 for c in owners.values() if c) >= 2  # the backlog sits on several nodes
    consumers = Consumers(cluster, "backlog", nodes=[1])  # consumers only on node 1
    try:
        wait_until(lambda: set(ids) <= set(consumers.got), 30,
                   "node 1's consumers to drain the other nodes' backlog")
        assert len(consumers.got) == len(set(consumers.got))
    finally:
        consumers.stop()
