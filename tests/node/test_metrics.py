"""Prometheus metrics of real dpq-node and dpq-gateway processes (``--metrics-listen``).

A short workload through the gateway, then scrapes of every node's and the
gateway's ``/metrics`` over HTTP: the counts equal what the test enqueued and
acked, the queue lag grows while a job waits, every documented family is there,
and the gateway exports its balancer weights.
"""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.cluster import Cluster, wait_until

from dpq.services.metrics import CATALOGUE
from dpq.v1 import queue_pb2

pytestmark = pytest.mark.slow  # real processes

N, M = 30, 12


def scrape(address: str) -> dict[str, list]:
    """Family name (as documented: a counter with its _total) -> its samples."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out[name] = fam.samples
    return out


def value(families: dict[str, list], name: str, **labels) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (of a histogram:
    its ``_count``)."""
    samples = families[name]
    wanted = name + "_count" if any(s.name == name + "_count" for s in samples) else name
    return sum(s.value for s in samples
               if s.name == wanted and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database):
    dsn = pg_database("metrics")
    with Cluster(tmp_path_factory.mktemp("metrics"), dsn, metrics=True) as c:
        c.wait_leader(timeout_s=60)
        c.start_gateway_and_wait()
        yield c


def test_counts_depths_and_the_queue_lag_match_the_workload(cluster: Cluster):
    gateway = cluster.gateway_stub()
    jobs = [queue_pb2.NewJob(queue="work", priority=1 + i % 3, payload=b"x") for i in range(N)]
    ids = list(gateway.Enqueue(queue_pb2.EnqueueRequest(jobs=jobs), timeout=30).job_ids)
    assert len(set(ids)) == N
    leased: list[queue_pb2.Job] = []

    def lease_more():
        for node in cluster.ids:
            want = M - len(leased)
            if want > 0:
                leased.extend(cluster.stub(node).Dequeue(queue_pb2.DequeueRequest(
                    queue="work", max_jobs=want, wait_ms=0, lease_ms=60_000,
                    consumer_id="metrics-test"), timeout=15).jobs)
        return len(leased) >= M

    wait_until(lease_more, 30, f"{M} jobs leased")
    refs = [queue_pb2.JobRef(job_id=j.job_id, attempt=j.attempt, receipt=j.receipt)
            for j in leased]
    results = gateway.Ack(queue_pb2.AckRequest(jobs=refs), timeout=15).results
    assert all(r.ok for r in results)

    # every node applied the same log: every node says the same
    for node in cluster.ids:
        address = cluster.metrics_addresses[node]

        def agrees(address=address):
            f = scrape(address)
            return (value(f, "dpq_jobs_enqueued_total", queue="work") == N
                    and value(f, "dpq_jobs_acked_total", queue="work") == M
                    and value(f, "dpq_queue_ready_jobs", queue="work") == N - M
                    and f)

        f = wait_until(agrees, 30, f"node {node}'s counts of the workload")
        assert value(f, "dpq_jobs_delivered_total", queue="work") >= M
        assert value(f, "dpq_jobs_enqueued_total", queue="work", priority="1") == N // 3
        assert value(f, "dpq_queue_leased_jobs", queue="work") == 0
        assert value(f, "dpq_jobs_nacked_total", queue="work") == 0
        first = [s for s in f["dpq_job_first_delivery_wait_seconds"]
                 if s.name.endswith("_count")]
        assert sum(s.value for s in first) >= M

    # the gateway forwards Stats with the same numbers
    [stats] = gateway.Stats(queue_pb2.StatsRequest(queue="work"), timeout=10).queues
    assert sum(stats.enqueued_by_priority) == N and sum(stats.acked_by_priority) == M
    assert len(stats.oldest_ready_age_ms) == 5


def test_the_oldest_ready_age_grows_while_a_job_waits(cluster: Cluster):
    cluster.gateway_stub().Enqueue(queue_pb2.EnqueueRequest(
        jobs=[queue_pb2.NewJob(queue="lagging", priority=2)]), timeout=30)
    address = cluster.metrics_addresses[cluster.wait_leader()]

    def age():
        return value(scrape(address), "dpq_queue_oldest_ready_age_seconds",
                     queue="lagging", priority="2")

    first = wait_until(age, 30, "the job to be waiting")
    later = wait_until(lambda: (a := age()) > first and a, 30, "the age to grow")
    assert later > first > 0
    assert value(scrape(address), "dpq_queue_oldest_ready_age_seconds", queue="lagging",
                 priority="1") == 0


def test_every_documented_family_is_exported(cluster: Cluster):
    node = scrape(cluster.metrics_addresses[1])
    gateway = scrape(cluster.gateway_metrics_address)
    for f in CATALOGUE:
        if f.where in ("node", "both"):
            assert f.name in node, f"node lacks {f.name}"
        if f.where in ("gateway", "both"):
            assert f.name in gateway, f"gateway lacks {f.name}"
    roles = {s.labels["role"]: s.value for s in node["dpq_paxos_role"]}
    assert sum(roles.values()) == 1 and set(roles) == {"leader", "follower", "candidate"}
    assert value(node, "dpq_paxos_fsync_seconds") > 0  # a histogram's count
    assert value(node, "dpq_grpc_requests_total", method="Queue/ClusterInfo", code="OK") > 0


def test_the_gateway_exports_the_balancer_weights_and_their_inputs(cluster: Cluster):
    def weights():
        f = scrape(cluster.gateway_metrics_address)
        got = {s.labels["node"]: s.value for s in f["dpq_gateway_node_weight"]}
        return f if set(got) == {"1", "2", "3"} and all(v > 0 for v in got.values()) else None

    f = wait_until(weights, 30, "a weight for every node")
    assert {s.labels["node"] for s in f["dpq_gateway_node_reachable"]} == {"1", "2", "3"}
    assert all(s.value == 1 for s in f["dpq_gateway_node_reachable"])
    assert value(f, "dpq_gateway_leader_id") == cluster.wait_leader()
    assert value(f, "dpq_gateway_jobs_total") >= N
