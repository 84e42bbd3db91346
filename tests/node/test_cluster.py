"""A 3-node cluster of real dpq-node processes on loopback, on a real PostgreSQL.

One cluster serves the whole module; each test works in a queue of its own.
Jobs are spread over the nodes that own them, so a consumer polls every node
(as the client library will); order is exact within a node (DESIGN.md,
"Ordering").
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import psycopg
import pytest
from support.cluster import Cluster, wait_until

from dpq.v1 import queue_pb2

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

MAX_ATTEMPTS = 3
AGING_STEP_MS = 200


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database):
    dsn = pg_database("cluster")
    root = tmp_path_factory.mktemp("cluster")
    with Cluster(root, dsn, args=("--max-attempts", str(MAX_ATTEMPTS),
                                  "--aging-step-ms", str(AGING_STEP_MS),
                                  "--dedup-window-ms", "60000")) as c:
        try:
            c.wait_leader()
        except AssertionError:
            for i in c.ids:
                print(f"--- node {i}\n{c.log_tail(i)}")
            raise
        yield c


@pytest.fixture
def queue(request):
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", request.node.name)[:100]


def enqueue(cluster, queue, *jobs, node=1):
    news = [queue_pb2.NewJob(queue=queue, **job) for job in jobs]
    return list(cluster.stub(node).Enqueue(queue_pb2.EnqueueRequest(jobs=news), timeout=15).job_ids)


def dequeue(cluster, node, queue, max_jobs=100, wait_ms=0, lease_ms=30_000):
    request = queue_pb2.DequeueRequest(queue=queue, max_jobs=max_jobs, wait_ms=wait_ms,
                                       lease_ms=lease_ms, consumer_id="test")
    return list(cluster.stub(node).Dequeue(request, timeout=wait_ms / 1000 + 15).jobs)


def drain(cluster, queue, expected, **kw):
    """Poll every node until ``expected`` jobs came back; return them by node."""
    got: dict[int, list] = {i: [] for i in cluster.procs}

    def more():
        for i, jobs in got.items():
            jobs.extend(dequeue(cluster, i, queue, **kw))
        return sum(map(len, got.values())) >= expected

    wait_until(more, 20, f"{expected} jobs from {queue}")
    return got


def refs(jobs, attempt=None):
    return [queue_pb2.JobRef(job_id=j.job_id, attempt=attempt or j.attempt, receipt=j.receipt)
            for j in jobs]


def stats(cluster, queue, node=1):
    [s] = cluster.stub(node).Stats(queue_pb2.StatsRequest(queue=queue), timeout=5).queues
    return s


def test_every_node_knows_the_leader_and_the_members(cluster):
    leader = cluster.wait_leader()
    for i in cluster.ids:
        info = cluster.info(i)
        assert info.leader_id == leader
        assert [n.node_id for n in info.nodes] == cluster.ids
        assert all(n.reachable for n in info.nodes)
        assert {n.address for n in info.nodes} == set(cluster.addresses.values())


def test_mixed_priorities_come_back_in_priority_order_within_each_node(cluster, queue):
    jobs = [{"priority": p, "payload": f"{p}-{k}".encode()}
            for k in range(4) for p in (5, 3, 1, 4, 2)]
    ids = enqueue(cluster, queue, *jobs, node=2)  # any node takes writes
    assert len(ids) == 20 and ids == sorted(ids) and len(set(ids)) == 20
    got = drain(cluster, queue, 20)
    assert sorted(j.job_id for js in got.values() for j in js) == ids
    for node_jobs in got.values():
        keys = [(j.priority, j.job_id) for j in node_jobs]
        assert keys == sorted(keys)  # most urgent first, FIFO within a priority
    assert sum(1 for js in got.values() if js) >= 2  # the owners are spread
    first = next(j for js in got.values() for j in js)
    assert first.attempt == 1 and first.lease_expires_at_us > first.created_at_us
    assert first.payload == f"{first.priority}-{(ids.index(first.job_id)) // 5}".encode()


def test_aging_lets_a_waiting_low_priority_job_through(cluster, queue):
    # the p5 job ranks as ready at t+4*200ms; the p1 jobs become ready at t+1s
    [old] = enqueue(cluster, queue, {"priority": 5, "payload": b"old"})
    fresh = enqueue(cluster, queue, *[{"priority": 1, "payload": b"new", "delay_ms": 1000}] * 6)
    wait_until(lambda: stats(cluster, queue).delayed == 0, 10, "the delayed jobs to be due")
    got = drain(cluster, queue, 7)
    owner = next(i for i, js in got.items() if any(j.job_id == old for j in js))
    order = [j.job_id for j in got[owner]]
    assert order[0] == old, order
    assert set(fresh) <= {j.job_id for js in got.values() for j in js}


def test_delayed_jobs_wait_until_due(cluster, queue):
    t0 = time.monotonic()
    [job_id] = enqueue(cluster, queue, {"priority": 1, "payload": b"later", "delay_ms": 600})
    assert all(dequeue(cluster, i, queue) == [] for i in cluster.ids)
    assert stats(cluster, queue).delayed == 1
    got = drain(cluster, queue, 1, wait_ms=1000)
    assert [j.job_id for js in got.values() for j in js] == [job_id]
    assert time.monotonic() - t0 >= 0.6


def test_long_poll_wakes_on_enqueue(cluster, queue):
    with ThreadPoolExecutor(3) as pool:
        polls = [pool.submit(dequeue, cluster, i, queue, 1, 20_000) for i in cluster.ids]
        wait_until(lambda: all(not p.done() for p in polls), 2, "the long-polls to park")
        t0 = time.monotonic()
        [job_id] = enqueue(cluster, queue, {"priority": 2, "payload": b"wake"})
        done = wait_until(lambda: [p for p in polls if p.done() and p.result()], 15,
                          "a long-poll to return")
        # woken by the enqueue, not by the end of its 20 s wait
        assert time.monotonic() - t0 < 10
        assert [j.job_id for j in done[0].result()] == [job_id]
        enqueue(cluster, queue, *[{"priority": 2, "payload": b"more"}] * 6)  # release the others
        for p in polls:
            p.result(timeout=30)


def test_lease_expiry_redelivers_with_the_next_attempt_and_refuses_the_stale_ack(cluster, queue):
    [job_id] = enqueue(cluster, queue, {"priority": 1, "payload": b"x"})
    [first] = [j for js in drain(cluster, queue, 1, lease_ms=300).values() for j in js]
    assert (first.job_id, first.attempt) == (job_id, 1)
    [second] = [j for js in drain(cluster, queue, 1, wait_ms=3000).values() for j in js]
    assert (second.job_id, second.attempt) == (job_id, 2)
    stale = cluster.stub(3).Ack(queue_pb2.AckRequest(jobs=refs([first])), timeout=10)
    assert [(r.job_id, r.ok, r.error) for r in stale.results] == [(job_id, False, "lease_lost")]
    ok = cluster.stub(2).Ack(queue_pb2.AckRequest(jobs=refs([second])), timeout=10)
    assert [(r.ok, r.error) for r in ok.results] == [(True, "")]
    again = cluster.stub(1).Ack(queue_pb2.AckRequest(jobs=refs([second])), timeout=10)
    assert [r.error for r in again.results] == ["not_found"]


def test_a_lease_is_settled_only_with_its_receipt(cluster, queue):
    [job_id] = enqueue(cluster, queue, {"priority": 1, "payload": b"mine"})
    [job] = [j for js in drain(cluster, queue, 1).values() for j in js]
    assert job.receipt != 0
    guessed = [queue_pb2.JobRef(job_id=job_id, attempt=job.attempt, receipt=r)
               for r in (0, job.receipt ^ 1)]  # id and attempt right: missing, wrong receipt
    for node, ref in zip((1, 2), guessed):
        reply = cluster.stub(node).Ack(queue_pb2.AckRequest(jobs=[ref]), timeout=10)
        assert [(r.ok, r.error) for r in reply.results] == [(False, "lease_lost")]
        reply = cluster.stub(node).ExtendLease(
            queue_pb2.ExtendLeaseRequest(jobs=[ref], lease_ms=1000), timeout=10)
        assert [r.error for r in reply.results] == ["lease_lost"]
    assert stats(cluster, queue).leased == 1  # still the consumer's
    reply = cluster.stub(3).Ack(queue_pb2.AckRequest(jobs=refs([job])), timeout=10)
    assert [(r.ok, r.error) for r in reply.results] == [(True, "")]


def test_nack_with_delay_then_dead_after_max_attempts(cluster, queue):
    [job_id] = enqueue(cluster, queue, {"priority": 3, "payload": b"flaky"})
    for attempt in range(1, MAX_ATTEMPTS + 1):
        [job] = [j for js in drain(cluster, queue, 1, wait_ms=2000).values() for j in js]
        assert (job.job_id, job.attempt) == (job_id, attempt)
        t0 = time.monotonic()
        reply = cluster.stub(1).Nack(queue_pb2.NackRequest(jobs=refs([job]), delay_ms=300),
                                     timeout=10)
        assert [r.ok for r in reply.results] == [True]
        if attempt < MAX_ATTEMPTS:
            # not before the delay
            assert all(dequeue(cluster, i, queue) == [] for i in cluster.ids)
    assert time.monotonic() - t0 < 5
    wait_until(lambda: stats(cluster, queue).dead == 1, 10, "the job to be dead")
    s = stats(cluster, queue)
    assert (list(s.ready_by_priority), s.delayed, s.leased) == ([0] * 5, 0, 0)


def test_dedup_key_returns_the_first_job(cluster, queue):
    first = enqueue(cluster, queue, {"priority": 2, "payload": b"a", "dedup_key": "order-17"})
    again = enqueue(cluster, queue, {"priority": 2, "payload": b"b", "dedup_key": "order-17"},
                    node=3)
    other = enqueue(cluster, queue, {"priority": 2, "payload": b"c", "dedup_key": "order-18"})
    assert first == again and other != first
    assert sum(stats(cluster, queue).ready_by_priority) == 2


def test_extend_keeps_a_lease_alive(cluster, queue):
    enqueue(cluster, queue, {"priority": 1, "payload": b"long"})
    [job] = [j for js in drain(cluster, queue, 1, lease_ms=400).values() for j in js]
    reply = cluster.stub(2).ExtendLease(
        queue_pb2.ExtendLeaseRequest(jobs=refs([job]), lease_ms=30_000), timeout=10)
    assert [r.ok for r in reply.results] == [True]
    # node 1 may learn the commit of the lease a moment after node 2 answered
    wait_until(lambda: stats(cluster, queue).leased == 1, 10, "node 1 to count the lease")
    # for twice the original lease, no node redelivers it
    with ThreadPoolExecutor(3) as pool:
        polls = [pool.submit(dequeue, cluster, i, queue, 1, 800) for i in cluster.ids]
        assert [p.result() for p in polls] == [[], [], []]
    ack = cluster.stub(3).Ack(queue_pb2.AckRequest(jobs=refs([job])), timeout=10)
    assert [r.ok for r in ack.results] == [True]


BAD_JOBS = [
    ({"priority": 0, "payload": b"x"}, "jobs[1].priority: 0 is outside 1..5"),
    ({"priority": 6, "payload": b"x"}, "jobs[1].priority: 6 is outside 1..5"),
    ({"priority": 1, "payload": b"x" * (1 << 20 | 1)},
     "jobs[1].payload: 1048577 bytes is over the limit of 1048576 bytes"),
    ({"priority": 1, "payload": b"x", "queue": "bad name!"}, "has characters outside"),
    ({"priority": 1, "payload": b"x", "queue": "q" * 129}, "over the limit of 128"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_JOBS)
def test_a_bad_job_refuses_the_whole_batch(cluster, queue, bad, message):
    good = queue_pb2.NewJob(queue=queue, priority=1, payload=b"fine")
    bad_job = queue_pb2.NewJob(**{"queue": queue, **bad})
    with pytest.raises(grpc.RpcError) as err:
        cluster.stub(1).Enqueue(queue_pb2.EnqueueRequest(jobs=[good, bad_job]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert cluster.stub(1).Stats(queue_pb2.StatsRequest(queue=queue),
                                 timeout=5).queues[0].ready_by_priority == [0] * 5


@pytest.mark.parametrize(
    ("request_kw", "message"),
    [
        ({"max_jobs": 0, "lease_ms": 1000}, "max_jobs: 0 is below the minimum of 1"),
        ({"max_jobs": 100_000, "lease_ms": 1000}, "max_jobs: 100000 is over the limit of 1000"),
        ({"max_jobs": 1, "lease_ms": 0}, "lease_ms: 0 is below the minimum of 1 ms"),
    ],
)
def test_bad_dequeue_is_refused(cluster, queue, request_kw, message):
    with pytest.raises(grpc.RpcError) as err:
        cluster.stub(2).Dequeue(queue_pb2.DequeueRequest(queue=queue, **request_kw), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()


def test_unknown_job_ids_are_refused_per_item(cluster, queue):
    unknown = queue_pb2.JobRef(job_id=10**12, attempt=1)
    reply = cluster.stub(1).Ack(queue_pb2.AckRequest(jobs=[unknown]), timeout=10)
    assert [(r.ok, r.error) for r in reply.results] == [(False, "not_found")]
    with pytest.raises(grpc.RpcError) as err:
        cluster.stub(1).Ack(queue_pb2.AckRequest(jobs=[queue_pb2.JobRef(job_id=5, attempt=0)]),
                            timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "jobs[0].attempt: 0 is not a lease" in err.value.details()


def test_postgres_holds_the_pending_jobs_and_forgets_acked_ones(cluster, queue):
    ids = enqueue(cluster, queue, *[{"priority": 2, "payload": b"p%d" % i} for i in range(10)])
    jobs = [j for js in drain(cluster, queue, 10).values() for j in js]
    acked = jobs[:4]
    cluster.stub(1).Ack(queue_pb2.AckRequest(jobs=refs(acked)), timeout=10)

    def rows():
        with psycopg.connect(cluster.dsn) as conn:
            return dict(conn.execute(
                "SELECT job_id, state FROM jobs WHERE queue = %s", (queue,)).fetchall())

    expected = {j.job_id: "leased" for j in jobs[4:]}
    wait_until(lambda: rows() == expected, 10, "PostgreSQL to hold exactly the unacked jobs")
    with psycopg.connect(cluster.dsn) as conn:
        payloads = dict(conn.execute(
            "SELECT job_id, payload FROM jobs WHERE queue = %s", (queue,)).fetchall())
    assert {i: bytes(p) for i, p in payloads.items()} == {
        j.job_id: j.payload for j in jobs[4:]}
    assert set(ids) == {j.job_id for j in jobs}


def test_request_and_error_logs_have_the_promised_form(cluster):
    log = (cluster.root / "n1" / "logs" / "requests.log").read_text()
    line = re.compile(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[INFO\] index: "
        r"Received POST request for /dpq\.v1\.Queue/\w+ from IP: 127\.0\.0\.1$")
    assert any(line.match(x) for x in log.splitlines()), log[-500:]
