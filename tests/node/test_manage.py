"""Managing jobs and queues (issue 14) on real dpq-node processes and a gateway.

GetJob, ListJobs, CancelJobs, RetryJobs, SetPriority, PauseQueue, ResumeQueue,
PurgeQueue and ExplainJob through a node (a follower: its writes go through the
leader, its reads come from its own replica) and through the gateway; what a
pause, a re-prioritisation and a redrive do to delivery; that they survive the
leader's death; and what PostgreSQL holds afterwards.

One cluster serves the module (each test has queues of its own); the failover
test starts its own. ``--max-attempts 1``: one lease that ends without an ack
makes a job DEAD. ``--aging-step-ms 60000``: aging is on (aged keys differ from
ready times) but too slow to reorder anything within a test.
"""

from __future__ import annotations

import re
import threading

import grpc
import psycopg
import pytest
from support.cluster import Cluster, wait_until

from dpq.v1 import queue_pb2 as pb

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

AGING_STEP_MS = 60_000
ARGS = ("--max-attempts", "1", "--aging-step-ms", str(AGING_STEP_MS))
MAX_PAUSE_MS = 30 * 24 * 3600 * 1000
T = 15  # seconds: every RPC's deadline


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database):
    root = tmp_path_factory.mktemp("manage")
    with Cluster(root, pg_database("manage"), args=ARGS) as c:
        c.wait_leader()
        c.start_gateway_and_wait()
        yield c


@pytest.fixture
def queue(request):
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", request.node.name)[:100]


@pytest.fixture(params=["node", "gateway"])
def api(request, cluster):
    """A Queue stub: a follower node's, or the gateway's."""
    if request.param == "gateway":
        return cluster.gateway_stub()
    leader = cluster.wait_leader()
    return cluster.stub(next(i for i in cluster.ids if i != leader))


# ---------------------------------------------------------------- helpers

def enqueue(stub, queue, priorities, payload=b"x", **kw) -> list[int]:
    jobs = [pb.NewJob(queue=queue, priority=p, payload=payload, **kw) for p in priorities]
    ids = list(stub.Enqueue(pb.EnqueueRequest(jobs=jobs), timeout=T).job_ids)
    assert len(ids) == len(jobs)
    return ids


def get(stub, job_id, **kw) -> pb.JobInfo:
    return stub.GetJob(pb.GetJobRequest(job_id=job_id, **kw), timeout=T)


def stats(stub, queue) -> pb.QueueStats:
    [s] = stub.Stats(pb.StatsRequest(queue=queue), timeout=T).queues
    return s


def dequeue(stub, queue, max_jobs=100, wait_ms=0, lease_ms=30_000, consumer_id="test"):
    return list(stub.Dequeue(pb.DequeueRequest(
        queue=queue, max_jobs=max_jobs, wait_ms=wait_ms, lease_ms=lease_ms,
        consumer_id=consumer_id), timeout=wait_ms / 1000 + T).jobs)


def take(cluster, queue, expected, timeout_s=30, **kw) -> dict[int, list[pb.Job]]:
    """Poll every node (each delivers the jobs it owns) until ``expected`` jobs came back;
    return them by node, in the order each delivered them."""
    got: dict[int, list[pb.Job]] = {i: [] for i in cluster.procs}

    def more():
        for node, jobs in got.items():
            jobs.extend(dequeue(cluster.stub(node), queue, **kw))
        return sum(map(len, got.values())) >= expected

    wait_until(more, timeout_s, f"{expected} jobs from {queue}")
    return got


def lease_one(cluster, queue, timeout_s=20) -> pb.Job:
    """One job of ``queue``, leased from whichever node owns one."""
    got = []

    def one():
        for node in cluster.procs:
            got.extend(dequeue(cluster.stub(node), queue, max_jobs=1))
            if got:
                return True
        return False

    wait_until(one, timeout_s, f"a job from {queue}")
    return got[0]


def flat(by_node) -> list[pb.Job]:
    return [j for jobs in by_node.values() for j in jobs]


def refs(jobs) -> list[pb.JobRef]:
    return [pb.JobRef(job_id=j.job_id, attempt=j.attempt, receipt=j.receipt) for j in jobs]


def ack(stub, jobs) -> list[bool]:
    return [r.ok for r in stub.Ack(pb.AckRequest(jobs=refs(jobs)), timeout=T).results]


def refused(call, request, *words) -> str:
    """Call and expect INVALID_ARGUMENT whose message holds every one of ``words``."""
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=T)
    code, details = caught.value.code(), caught.value.details()
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    for word in words:
        assert word in details, (word, details)
    return details


def everywhere(cluster, predicate, what, nodes=None, timeout_s=20):
    """Until ``predicate(stub)`` holds on every node's replica (each applies on its own)."""
    for node in nodes or cluster.ids:
        stub = cluster.stub(node)
        wait_until(lambda s=stub: predicate(s), timeout_s, f"{what} on node {node}")


def listed(stub, queue, **kw) -> list[pb.JobInfo]:
    return list(stub.ListJobs(pb.ListJobsRequest(queue=queue, limit=1000, **kw),
                              timeout=T).jobs)


# ---------------------------------------------------------------- 1. each RPC

def test_get_job_tells_where_a_job_stands(cluster, api, queue):
    [job_id] = enqueue(api, queue, [3], payload=b"pay-load", dedup_key=f"{queue}-k")
    info = get(api, job_id)
    assert (info.job_id, info.queue, info.priority, info.payload) == (job_id, queue, 3,
                                                                      b"pay-load")
    assert info.payload_bytes == 8 and info.dedup_key == f"{queue}-k"
    assert info.state == pb.READY and info.attempt == 0 and not info.last_error
    assert info.owner_node in cluster.ids
    assert info.created_at_us > 0 and info.ready_at_us >= info.created_at_us
    assert info.aged_key_us == info.ready_at_us + 2 * AGING_STEP_MS * 1000
    assert not info.consumer_id and info.lease_expires_at_us == 0
    bare = get(api, job_id, without_payload=True)
    assert bare.payload == b"" and bare.payload_bytes == 8

    owner = cluster.stub(info.owner_node)
    wait_until(lambda: get(owner, job_id).state == pb.READY, 10, "the owner to know the job")
    [leased] = dequeue(owner, queue, consumer_id="worker-7")
    assert leased.job_id == job_id
    wait_until(lambda: get(api, job_id).state == pb.LEASED, 10, "the lease to be seen")
    info = get(api, job_id)
    assert info.consumer_id == "worker-7" and info.attempt == 1
    assert info.lease_expires_at_us == leased.lease_expires_at_us

    [result] = api.Nack(pb.NackRequest(jobs=refs([leased]), error="disk full: /var/x"),
                        timeout=T).results
    assert result.ok, result
    wait_until(lambda: get(api, job_id).last_error == "disk full: /var/x", 10,
               "the nack's error to be kept")
    info = get(api, job_id)
    assert info.state == pb.DEAD and info.attempt == 1  # --max-attempts 1
    assert not info.consumer_id


def test_get_job_of_an_unknown_id_is_not_found(cluster, api):
    with pytest.raises(grpc.RpcError) as caught:
        get(api, 2**62)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value.details()
    assert "job_id" in caught.value.details()


def test_list_jobs_orders_filters_and_pages(cluster, api, queue):
    # two batches: the second's jobs were created later, so at an equal priority
    # their aged key is higher; across priorities the 60-s step decides
    first = enqueue(api, queue, [3, 1, 5, 2, 4] * 4)
    second = enqueue(api, queue, [1, 3, 2, 5, 4] * 4)
    ids = first + second
    jobs = listed(api, queue)
    assert sorted(j.job_id for j in jobs) == sorted(ids)
    keys = [(j.aged_key_us, j.job_id) for j in jobs]
    assert keys == sorted(keys)  # delivery order
    assert all(j.state == pb.READY and j.queue == queue for j in jobs)
    assert all(j.payload == b"" for j in jobs)  # with_payload not asked
    assert all(j.payload == b"x" for j in listed(api, queue, with_payload=True))

    p2 = listed(api, queue, priority=2)
    assert sorted(j.job_id for j in p2) == sorted(
        i for i, p in zip(ids, [3, 1, 5, 2, 4] * 4 + [1, 3, 2, 5, 4] * 4) if p == 2)
    assert [j.job_id for j in p2] == [j.job_id for j in jobs if j.priority == 2]

    # lease some (each node delivers what it owns): state filters split them
    leased = flat(take(cluster, queue, 6, max_jobs=2))
    leased_ids = {j.job_id for j in leased}
    wait_until(lambda: {j.job_id for j in listed(api, queue, state=pb.LEASED)} == leased_ids,
               10, "the leases to be listed")
    ready = listed(api, queue, state=pb.READY)
    assert {j.job_id for j in ready} == set(ids) - leased_ids
    assert not listed(api, queue, state=pb.DEAD)
    everything = listed(api, queue)
    # ready ones first in delivery order, then the others (leased) by job id
    assert [j.job_id for j in everything] == [j.job_id for j in ready] + sorted(leased_ids)

    # pages of 7: every job exactly once, in the same order
    pages, token = [], ""
    for _ in range(20):
        page = api.ListJobs(pb.ListJobsRequest(queue=queue, limit=7, page_token=token),
                            timeout=T)
        assert len(page.jobs) <= 7
        pages.extend(j.job_id for j in page.jobs)
        token = page.next_page_token
        if not token:
            break
    assert not token
    assert pages == [j.job_id for j in everything]
    assert ack(api, leased) == [True] * len(leased)

    refused(api.ListJobs, pb.ListJobsRequest(queue=queue, limit=1001), "limit", "1001")
    refused(api.ListJobs, pb.ListJobsRequest(queue=queue, page_token="not-a-token"),
            "page_token")


def test_pages_over_every_queue_list_every_job_once(cluster, api):
    enqueue(api, "pages-a", [1, 5] * 10)
    enqueue(api, "pages-b", [3] * 10)
    ids, token = [], ""
    for _ in range(200):
        page = api.ListJobs(pb.ListJobsRequest(limit=50, page_token=token), timeout=T)
        ids.extend(j.job_id for j in page.jobs)
        token = page.next_page_token
        if not token:
            break
    assert not token
    assert len(ids) == len(set(ids)) >= 30
    every = api.Stats(pb.StatsRequest(), timeout=T).queues
    assert len(ids) == sum(sum(s.ready_by_priority) + s.delayed + s.leased + s.dead + s.cancelled
                           for s in every)


def test_bulk_actions_answer_with_counts(cluster, api, queue):
    ids = enqueue(api, queue, [1, 2, 3, 4, 5] * 2)
    by_priority = {p: [i for i, q in zip(ids, [1, 2, 3, 4, 5] * 2) if q == p]
                   for p in range(1, 6)}

    done = api.CancelJobs(pb.CancelJobsRequest(selector=pb.JobSelector(
        queue=queue, priority=5)), timeout=T)
    assert (done.count, done.deferred) == (2, 0) and done.slot > 0
    again = api.CancelJobs(pb.CancelJobsRequest(selector=pb.JobSelector(
        queue=queue, priority=5)), timeout=T)
    assert (again.count, again.deferred) == (0, 0) and again.slot > done.slot
    for job_id in by_priority[5]:
        info = get(api, job_id)
        assert info.state == pb.CANCELLED and info.finished_at_us > 0
    assert stats(api, queue).cancelled == 2

    moved = api.SetPriority(pb.SetPriorityRequest(
        selector=pb.JobSelector(queue=queue, priority=4), priority=1), timeout=T)
    assert moved.count == 2
    assert [get(api, i).priority for i in by_priority[4]] == [1, 1]
    same = api.SetPriority(pb.SetPriorityRequest(
        selector=pb.JobSelector(job_ids=by_priority[1]), priority=1), timeout=T)
    assert same.count == 0  # already 1
    unknown = api.SetPriority(pb.SetPriorityRequest(
        selector=pb.JobSelector(job_ids=[2**62]), priority=2), timeout=T)
    assert unknown.count == 0

    nothing = api.RetryJobs(pb.RetryJobsRequest(selector=pb.JobSelector(
        queue=queue, state=pb.READY)), timeout=T)
    assert nothing.count == 0  # only DEAD and CANCELLED jobs are retried
    back = api.RetryJobs(pb.RetryJobsRequest(selector=pb.JobSelector(
        queue=queue, state=pb.CANCELLED)), timeout=T)
    assert back.count == 2
    for job_id in by_priority[5]:
        info = get(api, job_id)
        assert (info.state, info.priority, info.attempt) == (pb.READY, 5, 0)
    s = stats(api, queue)
    assert list(s.ready_by_priority) == [4, 2, 2, 0, 2] and s.cancelled == 0

    p = api.PauseQueue(pb.PauseQueueRequest(queue=queue), timeout=T)
    assert (p.queue, p.paused, p.paused_until_us, p.was_paused) == (queue, True, 0, False)
    assert stats(api, queue).paused
    r = api.ResumeQueue(pb.ResumeQueueRequest(queue=queue), timeout=T)
    assert (r.paused, r.was_paused) == (False, True)
    r = api.ResumeQueue(pb.ResumeQueueRequest(queue=queue), timeout=T)
    assert (r.paused, r.was_paused) == (False, False)
    assert not stats(api, queue).paused

    purged = api.PurgeQueue(pb.PurgeQueueRequest(queue=queue), timeout=T)
    assert purged.count == 10
    assert api.PurgeQueue(pb.PurgeQueueRequest(queue=queue), timeout=T).count == 0
    for job_id in ids:
        assert get(api, job_id).state == pb.CANCELLED
    assert not listed(api, queue)
    s = stats(api, queue)
    assert (sum(s.ready_by_priority), s.delayed, s.leased, s.dead, s.cancelled) == (0,) * 5


def test_bad_input_is_refused_naming_the_field_and_changes_nothing(cluster, api, queue):
    ids = enqueue(api, queue, [3, 3, 3, 3])
    leased = lease_one(cluster, queue)
    wait_until(lambda: get(api, leased.job_id).state == pb.LEASED, 10, "the lease")

    def picture():
        s = stats(api, queue)
        return ([(j.job_id, j.state, j.priority, j.last_error, j.cancel_requested)
                 for j in listed(api, queue)],
                list(s.ready_by_priority), s.leased, s.dead, s.cancelled, s.paused)

    before = picture()
    assert len(before[0]) == 4

    refused(api.CancelJobs, pb.CancelJobsRequest(selector=pb.JobSelector()), "selector", "all")
    refused(api.RetryJobs, pb.RetryJobsRequest(), "selector")
    refused(api.SetPriority, pb.SetPriorityRequest(
        selector=pb.JobSelector(queue=queue), priority=9), "priority", "9")
    refused(api.SetPriority, pb.SetPriorityRequest(
        selector=pb.JobSelector(queue=queue), priority=0), "priority")
    refused(api.CancelJobs, pb.CancelJobsRequest(selector=pb.JobSelector(
        queue=queue, state=99)), "selector.state", "99")
    refused(api.CancelJobs, pb.CancelJobsRequest(selector=pb.JobSelector(
        queue=queue, priority=9)), "selector.priority", "9")
    refused(api.ListJobs, pb.ListJobsRequest(queue=queue, state=99), "state", "99")
    refused(api.ListJobs, pb.ListJobsRequest(queue=queue, priority=9), "priority", "9")
    refused(api.ListJobs, pb.ListJobsRequest(queue=queue, limit=5000), "limit", "5000")
    refused(api.PauseQueue, pb.PauseQueueRequest(queue=queue, duration_ms=MAX_PAUSE_MS + 1),
            "duration_ms", str(MAX_PAUSE_MS + 1))
    refused(api.CancelJobs, pb.CancelJobsRequest(selector=pb.JobSelector(
        job_ids=range(1, 10_002))), "selector.job_ids", "10001")
    refused(api.PauseQueue, pb.PauseQueueRequest(queue="q" * 129), "queue", "129")
    refused(api.GetJob, pb.GetJobRequest(job_id=0), "job_id")
    refused(api.ExplainJob, pb.ExplainJobRequest(job_id=0), "job_id")
    refused(api.Nack, pb.NackRequest(jobs=refs([leased]), error="x" * 1025), "error", "1025")
    # 513 two-byte characters: 1,026 bytes, though fewer than 1,024 characters
    refused(api.Nack, pb.NackRequest(jobs=refs([leased]), error="é" * 513), "error", "1026")

    assert picture() == before
    assert get(api, leased.job_id).state == pb.LEASED

    # exactly 1,024 bytes is fine (and the job is DEAD: --max-attempts 1)
    [result] = api.Nack(pb.NackRequest(jobs=refs([leased]), error="é" * 512),
                        timeout=T).results
    assert result.ok
    wait_until(lambda: get(api, leased.job_id).state == pb.DEAD, 10, "the nack to apply")
    assert get(api, leased.job_id).last_error == "é" * 512
    assert leased.job_id in ids


def test_delayed_jobs_are_listed_explained_and_cancelled(cluster, api, queue):
    later = enqueue(api, queue, [4] * 3, delay_ms=600_000)
    now = enqueue(api, queue, [4])
    info = get(api, later[0])
    assert info.state == pb.DELAYED and info.ready_at_us >= info.created_at_us + 590_000_000
    assert {j.job_id for j in listed(api, queue, state=pb.DELAYED)} == set(later)
    assert [j.job_id for j in listed(api, queue, state=pb.READY)] == now
    assert [j.job_id for j in listed(api, queue)] == now + later  # by aged key: due first
    explained = api.ExplainJob(pb.ExplainJobRequest(job_id=later[0]), timeout=T)
    assert pb.HOLD_DELAYED in explained.holds
    # no drain rate yet: no estimate; with one, never before it is due
    assert explained.estimated_start_us == 0 or explained.estimated_start_us >= info.ready_at_us
    s = stats(api, queue)
    assert (s.delayed, sum(s.ready_by_priority)) == (3, 1)

    # by dedup key prefix: no dedup key, no match; then by id
    assert api.CancelJobs(pb.CancelJobsRequest(selector=pb.JobSelector(
        queue=queue, dedup_key_prefix="nope")), timeout=T).count == 0
    assert api.SetPriority(pb.SetPriorityRequest(selector=pb.JobSelector(
        job_ids=later[:1]), priority=1), timeout=T).count == 1
    s = stats(api, queue)
    assert s.delayed == 3 and list(s.ready_by_priority) == [0, 0, 0, 1, 0]
    assert api.CancelJobs(pb.CancelJobsRequest(selector=pb.JobSelector(
        queue=queue, state=pb.DELAYED)), timeout=T).count == 3
    s = stats(api, queue)
    assert (s.delayed, sum(s.ready_by_priority), s.cancelled) == (0, 1, 3)
    # back from CANCELLED: ready now, not delayed any more
    assert api.RetryJobs(pb.RetryJobsRequest(selector=pb.JobSelector(
        job_ids=later)), timeout=T).count == 3
    assert {get(api, i).state for i in later} == {pb.READY}
    s = stats(api, queue)
    assert (s.delayed, list(s.ready_by_priority)) == (0, [1, 0, 0, 3, 0])


def test_selecting_by_dedup_key_prefix(cluster, api, queue):
    keyed = [pb.NewJob(queue=queue, priority=3, dedup_key=f"{queue}/a/{i}") for i in range(3)]
    other = [pb.NewJob(queue=queue, priority=3, dedup_key=f"{queue}/b/{i}") for i in range(2)]
    ids = list(api.Enqueue(pb.EnqueueRequest(jobs=keyed + other), timeout=T).job_ids)
    done = api.SetPriority(pb.SetPriorityRequest(selector=pb.JobSelector(
        dedup_key_prefix=f"{queue}/a/"), priority=1), timeout=T)
    assert done.count == 3
    assert [get(api, i).priority for i in ids] == [1, 1, 1, 3, 3]
    assert api.CancelJobs(pb.CancelJobsRequest(selector=pb.JobSelector(
        queue=queue, dedup_key_prefix=f"{queue}/b/")), timeout=T).count == 2
    assert [get(api, i).state for i in ids] == [pb.READY] * 3 + [pb.CANCELLED] * 2


def test_purge_leaves_leased_jobs_to_their_consumer(cluster, api, queue):
    ids = enqueue(api, queue, [3] * 5)
    leased = lease_one(cluster, queue)
    wait_until(lambda: get(api, leased.job_id).state == pb.LEASED, 10, "the lease")
    assert api.PurgeQueue(pb.PurgeQueueRequest(queue=queue), timeout=T).count == 4
    assert [j.job_id for j in listed(api, queue)] == [leased.job_id]
    for job_id in set(ids) - {leased.job_id}:
        assert get(api, job_id).state == pb.CANCELLED
    s = stats(api, queue)
    assert (sum(s.ready_by_priority), s.leased, s.cancelled) == (0, 1, 0)
    for node in cluster.ids:
        assert dequeue(cluster.stub(node), queue) == []
    assert ack(api, [leased]) == [True]
    wait_until(lambda: get(api, leased.job_id).state == pb.DONE, 10, "the ack")


# ---------------------------------------------------------------- 2. pauses

def test_a_paused_queue_delivers_nothing_while_another_flows(cluster, api, queue):
    held, other = f"{queue}-held", f"{queue}-other"
    ids = enqueue(api, held, [2] * 6)
    p = api.PauseQueue(pb.PauseQueueRequest(queue=held), timeout=T)
    assert p.paused and p.paused_until_us == 0 and not p.was_paused
    assert api.PauseQueue(pb.PauseQueueRequest(queue=held), timeout=T).was_paused
    everywhere(cluster, lambda s: stats(s, held).paused, "the pause")

    flowed = []
    for _ in range(3):
        more = enqueue(api, other, [2] * 3)
        got = flat(take(cluster, other, 3))
        assert sorted(j.job_id for j in got) == sorted(more)
        flowed += got
        for node in cluster.ids:  # a long-poll on each node: nothing
            assert dequeue(cluster.stub(node), held, wait_ms=300) == []
    assert dequeue(cluster.gateway_stub(), held, wait_ms=300) == []
    assert ack(api, flowed) == [True] * 9
    s = stats(api, held)
    assert s.paused and sum(s.ready_by_priority) == 6 and s.leased == 0
    explained = api.ExplainJob(pb.ExplainJobRequest(job_id=ids[0]), timeout=T)
    assert pb.HOLD_PAUSED in explained.holds and explained.estimated_start_us == 0

    r = api.ResumeQueue(pb.ResumeQueueRequest(queue=held), timeout=T)
    assert r.was_paused and not r.paused
    got = flat(take(cluster, held, 6))
    assert sorted(j.job_id for j in got) == sorted(ids)
    assert ack(api, got) == [True] * 6


class ConsumeStream:
    """A Consume stream on one node, read on a thread; ``close`` ends it."""

    def __init__(self, stub, queue: str, credits: int) -> None:
        self.jobs: list[pb.Job] = []
        self.errors: list[str] = []
        self._done = threading.Event()
        opening = pb.ConsumeRequest(open=pb.ConsumeOpen(
            queue=queue, lease_ms=30_000, consumer_id="stream", wait_ms=200), credits=credits)

        def requests():
            yield opening
            self._done.wait(60)

        self._call = stub.Consume(requests(), timeout=60)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self._call:
                self.jobs.extend(response.jobs)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.errors.append(f"{exc.code()} {exc.details()}")

    def close(self) -> None:
        self._done.set()
        self._call.cancel()
        self._thread.join(10)


def test_a_paused_queue_pushes_nothing_to_consume_streams(cluster, queue):
    stub = cluster.stub(1)
    assert stub.PauseQueue(pb.PauseQueueRequest(queue=queue), timeout=T).paused
    everywhere(cluster, lambda s: stats(s, queue).paused, "the pause")
    streams = [ConsumeStream(cluster.stub(node), queue, credits=10) for node in cluster.ids]
    try:
        ids = enqueue(stub, queue, [3] * 6)
        everywhere(cluster, lambda s: sum(stats(s, queue).ready_by_priority) == 6,
                   "the jobs")
        # a while of heartbeats (every 200 ms) on every stream, and nothing pushed
        for _ in range(5):
            assert dequeue(stub, f"{queue}-tick", wait_ms=200) == []
            assert [j.job_id for st in streams for j in st.jobs] == []
        assert all(stats(cluster.stub(n), queue).leased == 0 for n in cluster.ids)
        assert stub.ResumeQueue(pb.ResumeQueueRequest(queue=queue), timeout=T).was_paused
        wait_until(lambda: len([j for st in streams for j in st.jobs]) >= 6, 20,
                   "the streams to get the jobs after ResumeQueue")
        assert sorted(j.job_id for st in streams for j in st.jobs) == sorted(ids)
        assert ack(stub, [j for st in streams for j in st.jobs]) == [True] * 6
    finally:
        for st in streams:
            st.close()
    assert [e for st in streams for e in st.errors] == []


def test_a_timed_pause_ends_by_itself_and_wakes_a_long_poll(cluster, queue):
    [job_id] = enqueue(cluster.stub(1), queue, [3])
    owner = wait_until(lambda: get(cluster.stub(1), job_id).owner_node, 10, "the owner")
    stub = cluster.stub(owner)
    wait_until(lambda: get(stub, job_id).state == pb.READY, 10, "the owner to know the job")
    # asked of the owner: answered once the owner applied it, so its next Dequeue sees it
    p = stub.PauseQueue(pb.PauseQueueRequest(queue=queue, duration_ms=1500), timeout=T)
    assert p.paused and p.paused_until_us > 0
    lease_ms = 30_000
    jobs = dequeue(stub, queue, wait_ms=20_000, lease_ms=lease_ms)
    assert [j.job_id for j in jobs] == [job_id], "the long-poll ended without the job"
    # leased by the leader's clock no sooner than the pause ended
    assert jobs[0].lease_expires_at_us - lease_ms * 1000 >= p.paused_until_us
    assert not stats(stub, queue).paused
    assert ack(stub, jobs) == [True]


# ---------------------------------------------------------------- 3. priorities

def test_reprioritised_backlog_overtakes_an_older_one(cluster, api, queue):
    twos = enqueue(api, queue, [2] * 30)
    fives = enqueue(api, queue, [5] * 30)
    done = api.SetPriority(pb.SetPriorityRequest(
        selector=pb.JobSelector(queue=queue, priority=5), priority=1), timeout=T)
    assert done.count == 30
    everywhere(cluster, lambda s: list(stats(s, queue).ready_by_priority) == [30, 30, 0, 0, 0],
               "the new priorities")
    by_node = take(cluster, queue, 60, max_jobs=7)
    assert sorted(j.job_id for j in flat(by_node)) == sorted(twos + fives)
    fives_set = set(fives)
    for node, jobs in by_node.items():
        order = ["was5" if j.job_id in fives_set else "2" for j in jobs]
        # within a node (order is exact within one) every former 5 comes before any 2
        assert order == sorted(order, key=lambda o: o != "was5"), (node, order)
        assert all(j.priority == (1 if j.job_id in fives_set else 2) for j in jobs)
    assert sum(1 for jobs in by_node.values() if jobs) >= 2
    assert ack(api, flat(by_node)) == [True] * 60


# ---------------------------------------------------------------- 4. dead letters

def test_dead_jobs_are_redriven_and_delivered_again(cluster, api, queue):
    ids = enqueue(api, queue, [2] * 8)
    first = flat(take(cluster, queue, 8, lease_ms=300))  # never acked
    assert sorted(j.job_id for j in first) == sorted(ids)
    wait_until(lambda: all(get(api, i).state == pb.DEAD for i in ids), 20,
               "the expired leases to make the jobs DEAD")
    for job_id in ids:
        info = get(api, job_id)
        assert (info.last_error, info.attempt) == ("lease expired", 1)
    assert stats(api, queue).dead == 8
    explained = api.ExplainJob(pb.ExplainJobRequest(job_id=ids[0]), timeout=T)
    assert list(explained.holds) == [pb.HOLD_DEAD]
    assert not listed(api, queue, state=pb.READY)
    assert len(listed(api, queue, state=pb.DEAD)) == 8

    back = api.RetryJobs(pb.RetryJobsRequest(selector=pb.JobSelector(
        queue=queue, state=pb.DEAD)), timeout=T)
    assert back.count == 8
    assert api.RetryJobs(pb.RetryJobsRequest(selector=pb.JobSelector(
        queue=queue, state=pb.DEAD)), timeout=T).count == 0
    for job_id in ids:
        info = get(api, job_id)
        assert (info.state, info.attempt) == (pb.READY, 0)
    assert stats(api, queue).dead == 0
    again = flat(take(cluster, queue, 8))
    assert sorted(j.job_id for j in again) == sorted(ids)
    assert all(j.attempt == 1 for j in again)
    assert ack(api, again) == [True] * 8


# ---------------------------------------------------------------- 5. cancelling leases

def test_cancelling_a_leased_job_waits_for_its_lease(cluster, api, queue):
    ids = enqueue(api, queue, [3, 3])
    jobs = flat(take(cluster, queue, 2))
    by_id = {j.job_id: j for j in jobs}
    acked, nacked = by_id[ids[0]], by_id[ids[1]]

    for job in (acked, nacked):
        done = api.CancelJobs(pb.CancelJobsRequest(selector=pb.JobSelector(
            job_ids=[job.job_id])), timeout=T)
        assert (done.count, done.deferred) == (0, 1)
        info = get(api, job.job_id)
        assert info.state == pb.LEASED and info.cancel_requested
    again = api.CancelJobs(pb.CancelJobsRequest(selector=pb.JobSelector(
        job_ids=ids)), timeout=T)
    assert (again.count, again.deferred) == (0, 0)  # already asked

    assert ack(api, [acked]) == [True]  # the work was done: the ack still counts
    [result] = api.Nack(pb.NackRequest(jobs=refs([nacked]), error="stop"), timeout=T).results
    assert result.ok
    wait_until(lambda: get(api, nacked.job_id).state == pb.CANCELLED, 10, "the cancel")
    assert get(api, acked.job_id).state == pb.DONE
    assert stats(api, queue).cancelled == 1
    for node in cluster.ids:
        assert dequeue(cluster.stub(node), queue, wait_ms=200) == []
    assert not listed(api, queue, state=pb.READY)


# ---------------------------------------------------------------- 6. explain

def test_explain_counts_the_backlog_ahead(cluster, queue):
    n = 200
    ids = enqueue(cluster.stub(1), queue, [3] * n)
    last = max(ids)
    everywhere(cluster, lambda s: sum(stats(s, queue).ready_by_priority) == n, "the backlog")
    owners = {j.job_id: j.owner_node for j in listed(cluster.stub(1), queue)}
    owner = owners[last]
    same_owner = sum(1 for o in owners.values() if o == owner)
    for node in cluster.ids:
        out = cluster.stub(node).ExplainJob(pb.ExplainJobRequest(job_id=last), timeout=T)
        assert out.job.job_id == last and out.job.state == pb.READY
        assert out.ahead_in_cluster == n - 1
        assert out.ahead_on_node == same_owner - 1 <= out.ahead_in_cluster
        assert out.answered_by == node and out.as_of_slot > 0
        assert out.consumers_known == (node == owner)
        assert pb.HOLD_PRIORITY_AHEAD in out.holds
        assert len(out.reasons) == len(out.holds)
    via_gateway = cluster.gateway_stub().ExplainJob(pb.ExplainJobRequest(job_id=last), timeout=T)
    assert via_gateway.answered_by == via_gateway.job.owner_node == owner
    assert via_gateway.consumers_known and via_gateway.waiting_consumers == 0
    assert pb.HOLD_NO_CONSUMERS in via_gateway.holds
    assert via_gateway.ahead_in_cluster == n - 1
    assert via_gateway.ahead_on_node == same_owner - 1
    head = cluster.gateway_stub().ExplainJob(pb.ExplainJobRequest(job_id=min(ids)), timeout=T)
    assert (head.ahead_in_cluster, head.ahead_on_node) == (0, 0)
    assert pb.HOLD_PRIORITY_AHEAD not in head.holds
    with pytest.raises(grpc.RpcError) as caught:
        cluster.gateway_stub().ExplainJob(pb.ExplainJobRequest(job_id=2**62), timeout=T)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    # consumed a little: the leased ones are no longer ahead, and there is a drain rate
    leased = flat(take(cluster, queue, 20, max_jobs=4))
    assert last not in {j.job_id for j in leased}  # the last of its node's heap
    wait_until(lambda: all(get(cluster.stub(owner), j.job_id).state == pb.LEASED
                           for j in leased), 10, "the owner to see the leases")
    out = cluster.gateway_stub().ExplainJob(pb.ExplainJobRequest(job_id=last), timeout=T)
    assert out.ahead_in_cluster == n - 1 - len(leased)
    assert out.drain_rate_per_s > 0 and out.estimated_start_us >= out.job.ready_at_us
    assert ack(cluster.stub(1), leased) == [True] * len(leased)


# ---------------------------------------------------------------- 8. PostgreSQL

def test_postgres_follows_the_actions(cluster, queue):
    stub = cluster.stub(1)
    back = enqueue(stub, f"{queue}-b", [2] * 3)  # cancelled, then retried once out of PG
    assert stub.CancelJobs(pb.CancelJobsRequest(selector=pb.JobSelector(
        job_ids=back)), timeout=T).count == 3
    gone = enqueue(stub, f"{queue}-c", [3] * 4)
    assert stub.CancelJobs(pb.CancelJobsRequest(selector=pb.JobSelector(
        queue=f"{queue}-c")), timeout=T).count == 4
    purged = enqueue(stub, f"{queue}-p", [3] * 4)
    assert stub.PurgeQueue(pb.PurgeQueueRequest(queue=f"{queue}-p"), timeout=T).count == 4
    moved = enqueue(stub, f"{queue}-r", [5] * 4)
    kept = enqueue(stub, f"{queue}-r", [4] * 2)
    assert stub.SetPriority(pb.SetPriorityRequest(selector=pb.JobSelector(
        queue=f"{queue}-r", priority=5), priority=1), timeout=T).count == 4
    expired = enqueue(stub, f"{queue}-e", [2] * 3)
    take(cluster, f"{queue}-e", 3, lease_ms=300)
    failed = enqueue(stub, f"{queue}-n", [2] * 2)
    jobs = flat(take(cluster, f"{queue}-n", 2))
    results = stub.Nack(pb.NackRequest(jobs=refs(jobs), error="boom"), timeout=T).results
    assert all(r.ok for r in results)
    wait_until(lambda: all(get(stub, i).state == pb.DEAD for i in expired + failed), 20,
               "the jobs to die")

    everything = back + gone + purged + moved + kept + expired + failed

    def rows():
        with psycopg.connect(cluster.dsn) as conn:
            return {r[0]: r[1:] for r in conn.execute(
                "SELECT job_id, priority, state::text, last_error FROM jobs "
                "WHERE job_id = ANY(%s)", (everything,)).fetchall()}

    def matches():
        now = rows()
        return (not set(now) & set(back + gone + purged)
                and all(now.get(i, (0,))[0] == 1 for i in moved)
                and all(now.get(i, (0,))[0] == 4 for i in kept)
                and all(now.get(i, (0, ""))[1:] == ("dead", "lease expired") for i in expired)
                and all(now.get(i, (0, ""))[1:] == ("dead", "boom") for i in failed))

    try:
        wait_until(matches, 30, "PostgreSQL to match the actions", interval_s=0.2)
    except AssertionError:
        print(rows())
        raise
    now = rows()
    assert set(now) == set(moved + kept + expired + failed)
    assert all(now[i][1] == "ready" for i in moved + kept)

    # back from CANCELLED (and from DEAD): the rows come back, ready
    assert stub.RetryJobs(pb.RetryJobsRequest(selector=pb.JobSelector(
        queue=f"{queue}-b", state=pb.CANCELLED)), timeout=T).count == 3
    assert stub.RetryJobs(pb.RetryJobsRequest(selector=pb.JobSelector(
        queue=f"{queue}-n", state=pb.DEAD)), timeout=T).count == 2

    def restored():
        now = rows()
        return all(now.get(i, (0, ""))[:2] == (2, "ready") for i in back + failed)

    try:
        wait_until(restored, 30, "PostgreSQL to have the retried jobs again", interval_s=0.2)
    except AssertionError:
        print(rows())
        raise


# ---------------------------------------------------------------- 7. failover

def test_actions_survive_the_leaders_death(tmp_path, pg_database):
    # frequent snapshots: the restarted node loads one (pauses, errors, cancels in it)
    args = (*ARGS, "--dead-after-ms", "1500", "--snapshot-every-slots", "10")
    with Cluster(tmp_path, pg_database("manage_failover"), args=args) as c:
        leader = c.wait_leader()
        stub = c.stub(leader)
        dead = enqueue(stub, "dead", [3] * 2)
        take(c, "dead", 2, lease_ms=300)
        cancelled = enqueue(stub, "cancelled", [3] * 2)
        assert stub.CancelJobs(pb.CancelJobsRequest(selector=pb.JobSelector(
            queue="cancelled")), timeout=T).count == 2
        wait_until(lambda: stats(stub, "dead").dead == 2, 20, "the expired jobs to die")
        held = enqueue(stub, "held", [3] * 4)
        assert stub.PauseQueue(pb.PauseQueueRequest(queue="held"), timeout=T).paused
        urgent = enqueue(stub, "urgent", [5] * 4)
        assert stub.SetPriority(pb.SetPriorityRequest(selector=pb.JobSelector(
            queue="urgent"), priority=2), timeout=T).count == 4
        redriven = enqueue(stub, "redriven", [3] * 3)
        take(c, "redriven", 3, lease_ms=300)
        wait_until(lambda: stats(stub, "redriven").dead == 3, 20, "the jobs to die")
        assert stub.RetryJobs(pb.RetryJobsRequest(selector=pb.JobSelector(
            queue="redriven", state=pb.DEAD)), timeout=T).count == 3

        c.kill(leader)
        survivors = [i for i in c.ids if i != leader]
        new = c.wait_leader(timeout_s=30, among=survivors)
        assert new != leader
        try:
            for node in survivors:  # the new leader and the other survivor
                s = c.stub(node)
                wait_until(lambda s=s: stats(s, "held").paused, 10, f"the pause on node {node}")
                assert stats(s, "held").paused_until_us == 0
                assert [get(s, i).priority for i in urgent] == [2] * 4
                assert [get(s, i).state for i in redriven] == [pb.READY] * 3
                assert [get(s, i).state for i in held] == [pb.READY] * 4
            # and they still act: nothing of the paused queue is delivered, the
            # redriven jobs are (the dead node's are moved to the survivors)
            got = take(c, "redriven", 3, timeout_s=40)
            assert sorted(j.job_id for j in flat(got)) == sorted(redriven)
            for node in survivors:
                assert dequeue(c.stub(node), "held", wait_ms=200) == []
            assert stats(c.stub(new), "held").paused

            # the killed node comes back from its disk (snapshot and log) knowing it all
            c.start(leader)
            back = c.stub(leader)
            wait_until(lambda: get(back, max(redriven)).state == pb.LEASED, 40,
                       "the restarted node to catch up")
            assert stats(back, "held").paused
            assert [get(back, i).priority for i in urgent] == [2] * 4
            for job_id in dead:
                info = get(back, job_id)
                assert (info.state, info.last_error) == (pb.DEAD, "lease expired")
            assert [get(back, i).state for i in cancelled] == [pb.CANCELLED] * 2
            assert c.info(leader).nodes[c.ids.index(leader)].snapshot_slot > 0

            # `all`: every job of every queue (the leased ones when their lease ends)
            everything = c.stub(new).CancelJobs(pb.CancelJobsRequest(
                selector=pb.JobSelector(all=True)), timeout=T)
            assert (everything.count, everything.deferred) == (10, 3)  # held, urgent, dead
            assert stats(c.stub(new), "held").cancelled == 4
        except AssertionError:
            for node in c.ids:
                print(f"--- node {node}\n{c.log_tail(node)}")
            raise
