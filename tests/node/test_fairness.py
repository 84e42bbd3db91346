"""Fair shares (issue 16) on real dpq-node processes: tenants of one queue and one
priority take turns by weight on every node, whatever the order they enqueued in.

Jobs go in through the gateway (spread over the three nodes); one consumer takes them
from the nodes in turn, 10 at a time, and the order it got them in is the delivery
order the assertions look at.
"""

from __future__ import annotations

import itertools

import pytest
from support.cluster import Cluster

from dpq.v1 import queue_pb2 as pb

pytestmark = pytest.mark.slow  # real processes

T = 15


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database):
    root = tmp_path_factory.mktemp("fairness")
    with Cluster(root, pg_database("fairness")) as c:
        c.wait_leader()
        c.start_gateway_and_wait()
        yield c


def enqueue(stub, queue, tenant, n, priority=3, batch=500):
    for start in range(0, n, batch):
        jobs = [pb.NewJob(queue=queue, priority=priority, payload=b"%s-%d" % (tenant.encode(), i),
                          fairness_key=tenant)
                for i in range(start, min(n, start + batch))]
        assert len(stub.Enqueue(pb.EnqueueRequest(jobs=jobs), timeout=T).job_ids) == len(jobs)


def deliveries(cluster, queue, n, by_node=None):
    """The tenants of the first ``n`` jobs delivered, taking from every node in turn
    (``by_node``: also each node's own sequence)."""
    got: list[str] = []
    idle = 0
    for node in itertools.cycle(cluster.ids):
        jobs = cluster.stub(node).Dequeue(pb.DequeueRequest(
            queue=queue, max_jobs=10, wait_ms=0, lease_ms=60_000, consumer_id="fair"),
            timeout=T).jobs
        tenants = [j.payload.split(b"-")[0].decode() for j in jobs]
        got += tenants
        if by_node is not None:
            by_node.setdefault(node, []).extend(tenants)
        idle = 0 if jobs else idle + 1
        if len(got) >= n or idle > 3 * len(cluster.ids):
            return got[:n]
    raise AssertionError("unreachable")


def test_a_tenant_with_50_jobs_is_not_stuck_behind_one_with_10000(cluster):
    gateway = cluster.gateway_stub()
    enqueue(gateway, "tenants", "A", 10_000)
    enqueue(gateway, "tenants", "B", 50)
    first = deliveries(cluster, "tenants", 300)
    print(f"B's 50 jobs came at deliveries {[i for i, t in enumerate(first) if t == 'B']}")
    assert first.count("B") == 50  # all of B's among the first 300 of 10,050 (FIFO: last)
    info = gateway.GetJob(pb.GetJobRequest(job_id=10_001), timeout=T)
    assert info.fairness_key == "B"


def test_weights_3_to_1_give_3_to_1_shares_while_both_have_backlog(cluster):
    gateway = cluster.gateway_stub()
    config = gateway.SetQueueConfig(pb.SetQueueConfigRequest(
        queue="weighted", fairness_weights=[pb.FairnessWeight(key="A", weight=3),
                                            pb.FairnessWeight(key="B", weight=1)]), timeout=T)
    assert [(w.key, w.weight) for w in config.fairness_weights] == [("A", 3), ("B", 1)]
    enqueue(gateway, "weighted", "B", 2_000)  # B first: FIFO would give B everything
    enqueue(gateway, "weighted", "A", 2_000)
    first = deliveries(cluster, "weighted", 1_200)
    a, b = first.count("A"), first.count("B")
    print(f"weights 3:1 -> {a}:{b} in the first 1,200 deliveries")
    assert 2.7 <= a / b <= 3.3


def test_a_more_urgent_tenant_job_comes_first_whatever_its_tenant(cluster):
    gateway = cluster.gateway_stub()
    enqueue(gateway, "levels", "A", 300, priority=4)
    enqueue(gateway, "levels", "B", 30, priority=2)
    by_node: dict[int, list[str]] = {}
    first = deliveries(cluster, "levels", 330, by_node)
    assert sorted(first) == ["A"] * 300 + ["B"] * 30
    for node, seq in by_node.items():  # each node: every priority-2 job before any 4
        assert seq == sorted(seq, reverse=True), (node, seq)
