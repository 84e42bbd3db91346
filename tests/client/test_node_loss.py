"""A node killed (SIGKILL) while a consumer works: the consumer keeps taking jobs
from the nodes left, and every job is handled.

A follower, then the leader (a new one is elected meanwhile); each case on a
cluster of its own, since it kills one of its nodes.
"""

from __future__ import annotations

import threading
import time

import pytest
from support.cluster import wait_until

from dpq.client import Consumer, JobSpec, Producer

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

JOBS = 90
CONCURRENCY = 4
MAX_JOBS = 10


@pytest.fixture
def cluster(fresh_cluster):
    return fresh_cluster


@pytest.mark.parametrize("role", ["follower", "leader"])
def test_a_consumer_survives_a_node_killed_mid_consume(cluster, targets, queue, counts, role):
    with Producer(targets) as producer:
        ids = producer.enqueue_many(JobSpec(b"%d" % i, queue=queue) for i in range(JOBS))
    leader = cluster.wait_leader()
    victim = leader if role == "leader" else next(i for i in cluster.ids if i != leader)
    victim_address = cluster.addresses[victim]

    handled: list[tuple[int, str, float]] = []
    lock = threading.Lock()
    ten_done = threading.Event()
    all_done = threading.Event()
    consumer = Consumer(targets[0], queue=queue, wait=1, lease=5, refresh_interval=0.5,
                        max_jobs=MAX_JOBS)

    def handler(job):
        time.sleep(0.03)
        with lock:
            handled.append((job.id, job.address, time.monotonic()))
            if len(handled) >= 10 and any(a == victim_address for _, a, _ in handled):
                ten_done.set()  # going, and the node to kill is serving too
            if {i for i, _, _ in handled} >= set(ids):
                all_done.set()
                consumer.stop()

    result = {}
    runner = threading.Thread(
        target=lambda: result.update(summary=consumer.run(handler, concurrency=CONCURRENCY)),
        daemon=True)
    runner.start()
    try:
        assert ten_done.wait(20), "the consumer did not get going"
        with lock:
            before = {address for _, address, _ in handled}
        cluster.kill(victim)
        killed_at = time.monotonic()
        assert all_done.wait(40), (
            f"handled {len({i for i, _, _ in handled})} of {JOBS} jobs after node {victim} died")
    finally:
        consumer.stop()
        runner.join(30)
        consumer.close()
    assert victim_address in before  # it was serving before it died
    after = [address for _, address, at in handled if at > killed_at]
    assert set(after) - {victim_address}  # the others kept serving
    # From the dead node, only the jobs already held when it died (a consumer
    # holds at most concurrency + prefetch + nodes - 1; run() prefetches max_jobs).
    assert after.count(victim_address) <= CONCURRENCY + MAX_JOBS + len(cluster.ids) - 1
    assert result["summary"].refused == 0
    survivor = next(i for i in cluster.ids if i != victim)
    wait_until(lambda: counts(queue, node=survivor) == {"ready": 0, "delayed": 0, "leased": 0,
                                                         "dead": 0}, 10, "no job left behind")
