"""Queue limits (issue 16) on real dpq-node processes: max_in_flight over the whole
cluster, across a leader SIGKILL; max_rate_per_s measured over 10 s with consumers on
every node; a limited queue beside a free one; SetQueueConfig's answers and refusals.

Consumers are threads of this process, each with its own long-poll loop on one node.
They stamp every lease when it arrives and every ack before it is sent, on this
process's monotonic clock; the interval between is inside the time the cluster
counts the lease (granted before it arrived, released after the ack was sent), so a
history checker that finds more overlapping intervals than the limit has found more
overlapping leases.
"""

from __future__ import annotations

import bisect
import random
import threading
import time

import grpc
import psycopg
import pytest
from support.cluster import Cluster, wait_until

from dpq.v1 import queue_pb2 as pb

pytestmark = pytest.mark.slow  # real processes

T = 15  # seconds: every RPC's deadline


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database):
    root = tmp_path_factory.mktemp("limits")
    with Cluster(root, pg_database("limits")) as c:
        c.wait_leader()
        c.start_gateway_and_wait()
        yield c


def _enqueue(stub, queue, n, batch=500):
    for start in range(0, n, batch):
        jobs = [pb.NewJob(queue=queue, priority=3, payload=b"%d" % i)
                for i in range(start, min(n, start + batch))]
        assert len(stub.Enqueue(pb.EnqueueRequest(jobs=jobs), timeout=T).job_ids) == len(jobs)


class Consumers:
    """``per_node`` eager consumers on each node of ``nodes``, until ``stop`` is set or
    ``total`` jobs were acked. Each holds a job ``hold_s`` before it acks."""

    def __init__(self, cluster, queue, nodes, per_node, total, hold_s=(0.0, 0.0),
                 max_jobs=1, lease_ms=5_000):
        self.cluster, self.queue, self.total = cluster, queue, total
        self.hold_s, self.max_jobs, self.lease_ms = hold_s, max_jobs, lease_ms
        self.lock = threading.Lock()
        self.intervals: list[tuple[float, float]] = []  # (arrived, ack sent)
        self.arrivals: list[float] = []
        self.acked: set[int] = set()
        self.errors = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(node, i), daemon=True)
                        for node in nodes for i in range(per_node)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def done(self) -> bool:
        with self.lock:
            return len(self.acked) >= self.total

    def _run(self, node, index):
        rng = random.Random(node * 100 + index)
        consumer = f"c{node}.{index}"
        while not self.stop.is_set() and not self.done():
            target = node if node in self.cluster.procs else rng.choice(list(self.cluster.procs))
            try:
                stub = self.cluster.stub(target)
                jobs = stub.Dequeue(pb.DequeueRequest(
                    queue=self.queue, max_jobs=self.max_jobs, wait_ms=500,
                    lease_ms=self.lease_ms, consumer_id=consumer), timeout=T).jobs
                arrived = time.monotonic()
                if not jobs:
                    continue
                with self.lock:
                    self.arrivals += [arrived] * len(jobs)
                time.sleep(rng.uniform(*self.hold_s))
                sent = time.monotonic()
                refs = [pb.JobRef(job_id=j.job_id, attempt=j.attempt, receipt=j.receipt)
                        for j in jobs]
                results = self._ack(stub, refs, rng)
                with self.lock:
                    self.intervals += [(arrived, sent)] * len(jobs)
                    self.acked.update(j.job_id for j, ok in zip(jobs, results) if ok)
            except (grpc.RpcError, ValueError):  # ValueError: its channel closed with the node
                with self.lock:
                    self.errors += 1
                self.stop.wait(0.1)  # its node is down: the next loop picks another

    def _ack(self, stub, refs, rng):
        for _ in range(20):  # the node may die between the lease and the ack
            try:
                # NOT_FOUND on a retry: an earlier attempt was applied, its answer lost
                return [r.ok or r.reason == pb.REFUSAL_NOT_FOUND
                        for r in stub.Ack(pb.AckRequest(jobs=refs), timeout=T).results]
            except (grpc.RpcError, ValueError):
                stub = self.cluster.stub(rng.choice(list(self.cluster.procs)))
                if self.stop.wait(0.2):
                    break
        return [False] * len(refs)


def most_overlapping(intervals) -> int:
    """The most intervals that hold at one instant (closed at the start, open at the end)."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals],
                    key=lambda e: (e[0], e[1]))  # an end before a start at the same time
    most = held = 0
    for _, step in events:
        held += step
        most = max(most, held)
    return most


def test_the_history_checker_sees_overlaps():
    assert most_overlapping([(0, 2), (1, 3), (2, 4)]) == 2
    assert most_overlapping([(0, 10), (1, 2), (1.5, 3), (2.5, 9)]) == 3
    assert most_overlapping([]) == 0


def test_max_in_flight_holds_with_20_consumers_across_a_leader_kill(tmp_path, pg_database):
    queue, limit, total = "inflight", 5, 600
    with Cluster(tmp_path, pg_database("inflight"),
                 args=("--dead-after-ms", "3000")) as c:
        c.wait_leader()
        c.start_gateway_and_wait()
        gateway = c.gateway_stub()
        config = gateway.SetQueueConfig(pb.SetQueueConfigRequest(
            queue=queue, max_in_flight=limit), timeout=T)
        assert config.max_in_flight == limit and config.slot > 0
        _enqueue(gateway, queue, total)
        leased_seen = []

        def watch_stats():  # what the replicas count, beside what the consumers saw
            while not consumers.stop.is_set():
                for node in list(c.procs):
                    try:
                        [s] = c.stub(node).Stats(pb.StatsRequest(queue=queue), timeout=2).queues
                        leased_seen.append(s.leased)
                    except grpc.RpcError:
                        pass
                consumers.stop.wait(0.02)

        with Consumers(c, queue, c.ids, per_node=7, total=total, hold_s=(0.02, 0.08),
                       lease_ms=3_000) as consumers:
            watcher = threading.Thread(target=watch_stats, daemon=True)
            watcher.start()
            wait_until(lambda: len(consumers.acked) >= total // 3, 120, "a third acked")
            leader = c.wait_leader()
            c.kill(leader)
            killed_at = time.monotonic()
            wait_until(consumers.done, 180, f"all {total} jobs acked after the kill",
                       interval_s=0.2)
        watcher.join(timeout=10)
        assert len(consumers.threads) == 21  # 7 on each of 3 nodes, 20 and more
        print(f"in flight: at most {most_overlapping(consumers.intervals)} seen by consumers, "
              f"{max(leased_seen)} by Stats; {consumers.errors} consumer errors")
        assert most_overlapping(consumers.intervals) <= limit
        after = [iv for iv in consumers.intervals if iv[0] > killed_at]
        assert after and most_overlapping(after) <= limit
        # the consumers were eager enough to hit the limit (so the check could fail)
        assert most_overlapping(consumers.intervals) == limit
        assert leased_seen and max(leased_seen) <= limit
        assert consumers.acked == set(range(1, total + 1))


def test_max_rate_per_s_is_within_10_percent_over_10_s_with_consumers_on_every_node(cluster):
    queue, rate = "rated", 200
    gateway = cluster.gateway_stub()
    config = gateway.SetQueueConfig(pb.SetQueueConfigRequest(
        queue=queue, max_rate_per_s=rate), timeout=T)
    assert config.max_rate_per_s == rate and config.burst == 0  # default: rate / 10
    _enqueue(gateway, queue, 3_600)
    with Consumers(cluster, queue, cluster.ids, per_node=3, total=3_600, max_jobs=20,
                   lease_ms=30_000) as consumers:
        wait_until(lambda: consumers.arrivals and time.monotonic() - min(consumers.arrivals)
                   > 13, 60, "13 s of deliveries", interval_s=0.2)
    arrivals = sorted(consumers.arrivals)
    start = arrivals[0] + 2  # past the first burst and the first round trips
    in_window = sum(1 for t in arrivals if start <= t < start + 10)
    print(f"rate {rate}/s: {in_window} deliveries in 10 s")
    assert 0.9 * rate * 10 <= in_window <= 1.1 * rate * 10, in_window
    # no 10-s window at all (the burst included) goes over by more than 10 %
    busiest = max(bisect.bisect_left(arrivals, a + 10) - i for i, a in enumerate(arrivals))
    assert busiest <= 1.1 * rate * 10
    deliveries = {node: 0 for node in cluster.ids}
    for node in cluster.ids:
        [s] = cluster.stub(node).Stats(pb.StatsRequest(queue=queue), timeout=T).queues
        deliveries[node] = sum(s.delivered_by_priority)
    assert all(deliveries.values())  # counted on every replica


def test_a_limited_queue_does_not_hold_back_another(cluster):
    gateway = cluster.gateway_stub()
    gateway.SetQueueConfig(pb.SetQueueConfigRequest(queue="slowq", max_rate_per_s=1, burst=1),
                           timeout=T)
    _enqueue(gateway, "slowq", 50)
    _enqueue(gateway, "freeq", 300)
    with Consumers(cluster, "slowq", cluster.ids, per_node=2, total=50) as slow, \
            Consumers(cluster, "freeq", cluster.ids, per_node=2, total=300, max_jobs=10) as free:
        wait_until(free.done, 60, "every job of the free queue")
        elapsed = time.monotonic() - min(free.arrivals + slow.arrivals)
        with slow.lock:
            slow_count = len(slow.arrivals)
    assert slow_count <= 1 + elapsed * 1 + 1  # its burst, then one a second


def test_set_queue_config_merges_shows_in_stats_and_refuses_bad_values(cluster):
    stub = cluster.stub(cluster.ids[0])
    def set_(**kw):
        return stub.SetQueueConfig(pb.SetQueueConfigRequest(queue="cfg", **kw), timeout=T)

    set_(max_in_flight=50, max_rate_per_s=200.0,
         fairness_weights=[pb.FairnessWeight(key="a", weight=3)])
    after = set_(max_attempts=4)
    assert (after.max_in_flight, after.max_rate_per_s, after.max_attempts) == (50, 200.0, 4)
    assert [(w.key, w.weight) for w in after.fairness_weights] == [("a", 3)]
    for node in cluster.ids:  # every replica has it
        def config_of(n=node):
            got = cluster.stub(n).GetQueueConfig(pb.GetQueueConfigRequest(queue="cfg"), timeout=T)
            return got if got.max_attempts == 4 else None

        assert wait_until(config_of, 20, f"the config on node {node}").max_in_flight == 50
    [s] = stub.Stats(pb.StatsRequest(queue="cfg"), timeout=T).queues
    assert s.config.max_rate_per_s == 200.0
    for bad, field in (({"max_rate_per_s": -1.0}, "max_rate_per_s"),
                       ({"max_in_flight": 10**7}, "max_in_flight"),
                       ({"fairness_weights": [pb.FairnessWeight(key="a", weight=5000)]},
                        "weight"),
                       ({"max_attempts": 5000}, "max_attempts")):
        for target in (stub, cluster.gateway_stub()):
            with pytest.raises(grpc.RpcError) as err:
                target.SetQueueConfig(pb.SetQueueConfigRequest(queue="cfg", **bad), timeout=T)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in err.value.details()
    again = stub.GetQueueConfig(pb.GetQueueConfigRequest(queue="cfg"), timeout=T)
    assert again.max_in_flight == 50 and again.max_attempts == 4  # nothing changed

    def in_postgres():  # the leader's writer keeps queue_configs in step
        with psycopg.connect(cluster.dsn) as conn:
            return conn.execute(
                "SELECT max_in_flight, max_rate_per_s, fairness_weights, max_attempts "
                "FROM queue_configs WHERE queue = 'cfg'").fetchone()

    assert wait_until(lambda: in_postgres() == (50, 200.0, {"a": 3}, 4), 30,
                      "the settings in PostgreSQL")


def test_a_budget_filled_with_priority_5_still_takes_priority_1(tmp_path, pg_database):
    payload = b"p" * 10_000
    with Cluster(tmp_path, pg_database("budget"), args=("--memory-budget-mb", "8")) as c:
        c.wait_leader()
        c.start_gateway_and_wait()
        gateway = c.gateway_stub()
        refused = None
        for _ in range(2_000):  # ~800 fit; bounded either way
            try:
                gateway.Enqueue(pb.EnqueueRequest(jobs=[
                    pb.NewJob(queue="full", priority=5, payload=payload)] * 10), timeout=T)
            except grpc.RpcError as exc:
                refused = exc
                break
        assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "priority-5" in refused.details() and "80 %" in refused.details()
        [s] = gateway.Stats(pb.StatsRequest(queue="full"), timeout=T).queues
        assert s.ready_by_priority[4] >= 300  # it really filled up with priority 5
        ids = [gateway.Enqueue(pb.EnqueueRequest(jobs=[
            pb.NewJob(queue="full", priority=1, payload=payload)] * 5), timeout=T).job_ids
            for _ in range(10)]
        assert sum(len(i) for i in ids) == 50  # urgent work still gets in


def test_client_consumers_on_streams_never_run_more_than_max_in_flight(cluster):
    """The Python client (Consume streams, prefetch) under a limit: a job a consumer
    holds, even before its handler runs, is leased, so handlers running at once never
    pass max_in_flight over three consumers with eight threads each."""
    from dpq.client import Consumer, Producer

    queue, limit, total = "streamed", 3, 120
    cluster.gateway_stub().SetQueueConfig(pb.SetQueueConfigRequest(
        queue=queue, max_in_flight=limit), timeout=T)
    with Producer(cluster.gateway_address) as producer:
        producer.enqueue_many([{"payload": b"x", "queue": queue}] * total)
    lock = threading.Lock()
    running, most, handled = 0, 0, []

    def handler(job):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1
            handled.append(job.id)

    consumers = [Consumer(cluster.addresses[i], queue=queue, wait=1.0) for i in cluster.ids]
    runs = [threading.Thread(target=c.run, args=(handler, 8), kwargs={"handle_signals": False},
                             daemon=True) for c in consumers]
    for t in runs:
        t.start()
    try:
        wait_until(lambda: len(handled) >= total, 120, f"{total} jobs handled")
    finally:
        for c in consumers:
            c.stop()
        for t in runs:
            t.join(timeout=30)
        for c in consumers:
            c.close()
    assert len(set(handled)) == total
    assert most == limit  # reached, never passed
