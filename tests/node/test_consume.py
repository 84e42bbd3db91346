"""Consume streams on the in-process cluster: credits, settlements, bad fields, broken streams.

The session (``dpq.node.consume``) is driven through ``NodeOperations.consume``
with an async generator of requests, as the servicer drives it; the gRPC
stream itself is covered by tests/client/test_consume_stream.py.
"""

from __future__ import annotations

import asyncio

import pytest
from support.inprocess import InProcessCluster

from dpq.queue.state import JobState
from dpq.queue.validate import InvalidArgument
from dpq.v1 import queue_pb2

ANSWER_S = 5.0  # real seconds an answer may take (fsyncs of the WAL)


def run(tmp_path, test) -> None:
    async def main():
        async with InProcessCluster(tmp_path) as cluster:
            await test(cluster)
    asyncio.run(main())


class Stream:
    """One consumer's Consume stream on a node, driven by hand."""

    def __init__(self, cluster: InProcessCluster, node_id: int, *, credits: int = 0,
                 lease_ms: int = 30_000, queue: str = "q",
                 opening: queue_pb2.ConsumeRequest | None = None) -> None:
        self._requests: asyncio.Queue[queue_pb2.ConsumeRequest | None] = asyncio.Queue()
        self._requests.put_nowait(opening or queue_pb2.ConsumeRequest(
            open=queue_pb2.ConsumeOpen(queue=queue, lease_ms=lease_ms, consumer_id="c"),
            credits=credits))
        self.session = cluster.nodes[node_id].ops.consumers
        self.responses = cluster.nodes[node_id].ops.consume(self._feed())

    async def _feed(self):
        while (request := await self._requests.get()) is not None:
            yield request

    def send(self, **fields) -> None:
        self._requests.put_nowait(queue_pb2.ConsumeRequest(**fields))

    def half_close(self) -> None:
        self._requests.put_nowait(None)

    async def next(self) -> queue_pb2.ConsumeResponse:
        return await asyncio.wait_for(anext(self.responses), ANSWER_S)


def ref(job: queue_pb2.Job) -> queue_pb2.JobRef:
    return queue_pb2.JobRef(job_id=job.job_id, attempt=job.attempt, receipt=job.receipt)


def test_a_stream_pushes_no_more_jobs_than_its_credits_and_leases_nothing_without(tmp_path):
    async def test(cluster: InProcessCluster):
        await cluster.elect()
        node = cluster.followers()[0]
        owned = cluster.nodes[node].owned
        ids = await cluster.enqueue_owned(via=node, owners=[node] * 5)
        await cluster.until(lambda: owned.ready_count("q", cluster.wall()) == 5, "5 ready")

        stream = Stream(cluster, node, credits=2)
        first = await stream.next()  # the answer to the opening: what was ready at once
        assert [j.job_id for j in first.jobs] == ids[:2]
        await cluster.settle()
        assert owned.ready_count("q", cluster.wall()) == 3  # no credits: nothing more leased

        stream.send(credits=2)
        assert [j.job_id for j in (await stream.next()).jobs] == ids[2:4]
        stream.send(credits=5)
        assert [j.job_id for j in (await stream.next()).jobs] == ids[4:]
        # 4 credits left: of 6 new jobs, 4 are pushed as they become ready, 2 stay.
        more = await cluster.enqueue_owned(via=node, owners=[node] * 6)
        pushed = []
        while len(pushed) < 4:
            pushed += [j.job_id for j in (await stream.next()).jobs]
        assert pushed == more[:4]
        await cluster.settle()
        assert owned.ready_count("q", cluster.wall()) == 2
        assert stream.session.pushed_jobs == 9
        assert stream.session.pushes <= 4
        await stream.responses.aclose()
    run(tmp_path, test)


def test_settlements_on_the_stream_are_answered_with_their_request_id(tmp_path):
    async def test(cluster: InProcessCluster):
        await cluster.elect()
        node = cluster.followers()[0]
        await cluster.enqueue_owned(via=node, owners=[node] * 3)
        await cluster.until(lambda: cluster.nodes[node].owned.ready_count("q", cluster.wall())
                            == 3, "3 ready")
        stream = Stream(cluster, node, credits=3)
        a, b, c = (await stream.next()).jobs
        stale = queue_pb2.JobRef(job_id=c.job_id, attempt=c.attempt, receipt=c.receipt + 1)
        stream.send(request_id=7, ack=queue_pb2.AckRequest(jobs=[ref(a), ref(b)]))
        stream.send(request_id=9, nack=queue_pb2.NackRequest(jobs=[stale], delay_ms=0))
        stream.send(request_id=11, extend=queue_pb2.ExtendLeaseRequest(jobs=[ref(c)],
                                                                       lease_ms=60_000))
        answers = {}
        while len(answers) < 3:
            response = await stream.next()
            assert not response.jobs
            answers[response.request_id] = [(r.job_id, r.ok, r.error) for r in response.results]
        assert answers == {7: [(a.job_id, True, ""), (b.job_id, True, "")],
                           9: [(c.job_id, False, "lease_lost")],
                           11: [(c.job_id, True, "")]}
        await stream.responses.aclose()
    run(tmp_path, test)


@pytest.mark.parametrize("opening, later, named", [
    (queue_pb2.ConsumeRequest(credits=1), None, "open:"),
    (queue_pb2.ConsumeRequest(open=queue_pb2.ConsumeOpen(queue="q", lease_ms=0)), None,
     "open.lease_ms: 0"),
    (queue_pb2.ConsumeRequest(open=queue_pb2.ConsumeOpen(queue="bad name", lease_ms=1)), None,
     "open.queue: 'bad name'"),
    (None, queue_pb2.ConsumeRequest(credits=10_001),
     ("credits: 10001 more would make 10001 jobs outstanding on this stream, over the limit of "
     "10000")),
    (None, queue_pb2.ConsumeRequest(request_id=1, ack=queue_pb2.AckRequest(
        jobs=[queue_pb2.JobRef(job_id=0, attempt=1)])), "ack.jobs[0].job_id: 0"),
    (None, queue_pb2.ConsumeRequest(request_id=1, nack=queue_pb2.NackRequest(
        jobs=[queue_pb2.JobRef(job_id=1, attempt=1)], delay_ms=31 * 24 * 3600 * 1000)),
     "nack.delay_ms: 2678400000 ms is over the limit of 2592000000 ms"),
    (None, queue_pb2.ConsumeRequest(request_id=0, ack=queue_pb2.AckRequest(
        jobs=[queue_pb2.JobRef(job_id=1, attempt=1)])), "request_id: 0"),
    (None, queue_pb2.ConsumeRequest(open=queue_pb2.ConsumeOpen(queue="q", lease_ms=1)),
     "open: the stream is open already"),
])
def test_a_bad_field_ends_the_stream_naming_it(tmp_path, opening, later, named):
    async def test(cluster: InProcessCluster):
        await cluster.elect()
        stream = Stream(cluster, cluster.followers()[0], opening=opening)
        if later is not None:
            await stream.next()  # the opening's answer
            stream._requests.put_nowait(later)
        with pytest.raises(InvalidArgument) as refused:
            await stream.next()
        assert str(refused.value).startswith(named), str(refused.value)
    run(tmp_path, test)


def test_a_lease_that_commits_after_the_stream_broke_goes_back_at_once(tmp_path):
    async def test(cluster: InProcessCluster):
        leader = await cluster.elect()
        state = cluster.nodes[leader].state
        owned = cluster.nodes[leader].owned
        [job_id] = await cluster.enqueue_owned(via=leader, owners=[leader])
        await cluster.until(lambda: owned.ready_count("q", cluster.wall()) == 1, "ready")

        stream = Stream(cluster, leader)  # no credits: the opening is answered at once
        assert not (await stream.next()).jobs
        undo = cluster.net.drop_if(lambda message: True)  # no majority: the Lease hangs
        stream.send(credits=1)
        await cluster.until(lambda: job_id in owned.reserved, "the Lease is proposed")
        await stream.responses.aclose()  # the consumer is gone before it commits
        undo()
        await cluster.tick(3)
        await cluster.until(lambda: state.jobs[job_id].state == JobState.READY
                            and job_id not in owned.reserved
                            and owned.ready_count("q", cluster.wall()) == 1,
                            "the job is leased, then given back")
        assert state.jobs[job_id].attempt == 0  # the delivery nobody saw costs no attempt
        [again] = await cluster.dequeue(leader)
        assert (again.job_id, again.attempt) == (job_id, 1)
    run(tmp_path, test)


def test_jobs_leased_but_not_yet_sent_when_the_stream_ends_go_back(tmp_path):
    async def test(cluster: InProcessCluster):
        await cluster.elect()
        node = cluster.followers()[0]
        state = cluster.nodes[node].state
        stream = Stream(cluster, node, credits=2)
        assert not (await stream.next()).jobs
        ids = await cluster.enqueue_owned(via=node, owners=[node] * 2)
        # Leased for the stream, but the consumer reads nothing more.
        await cluster.until(lambda: all(state.jobs[i].state == JobState.LEASED for i in ids),
                            "both jobs leased")
        await cluster.until(lambda: not stream.session.dispatcher.owned.reserved, "pushed")
        await stream.responses.aclose()
        await cluster.until(lambda: all(state.jobs[i].state == JobState.READY for i in ids),
                            "both given back")
        assert stream.session.pushed_jobs == 0
    run(tmp_path, test)


def test_a_half_closed_stream_answers_what_it_was_sent_and_ends(tmp_path):
    async def test(cluster: InProcessCluster):
        await cluster.elect()
        node = cluster.followers()[0]
        await cluster.enqueue_owned(via=node, owners=[node])
        await cluster.until(lambda: cluster.nodes[node].owned.ready_count("q", cluster.wall())
                            == 1, "ready")
        stream = Stream(cluster, node, credits=1)
        [job] = (await stream.next()).jobs
        stream.send(request_id=1, ack=queue_pb2.AckRequest(jobs=[ref(job)]))
        stream.half_close()
        answer = await stream.next()
        assert (answer.request_id, [r.ok for r in answer.results]) == (1, [True])
        with pytest.raises(StopAsyncIteration):
            await stream.next()
        assert stream.session.open == 0 and stream.session.opened == 1
    run(tmp_path, test)


def test_two_streams_on_one_queue_share_the_ready_jobs(tmp_path):
    async def test(cluster: InProcessCluster):
        await cluster.elect()
        node = cluster.followers()[0]
        one, two = Stream(cluster, node, credits=3), Stream(cluster, node, credits=3)
        assert not (await one.next()).jobs and not (await two.next()).jobs
        ids = await cluster.enqueue_owned(via=node, owners=[node] * 6)

        async def take(stream: Stream, n: int) -> list[int]:
            got: list[int] = []
            while len(got) < n:
                got += [j.job_id for j in (await stream.next()).jobs]
            return got

        got_one, got_two = await asyncio.gather(take(one, 3), take(two, 3))
        assert sorted(got_one + got_two) == ids
        await one.responses.aclose()
        await two.responses.aclose()
    run(tmp_path, test)


def test_a_paused_queue_pushes_nothing_until_resumed_then_the_stream_wakes(tmp_path):
    async def test(cluster: InProcessCluster):
        await cluster.elect()
        node = cluster.followers()[0]
        ops = cluster.nodes[node].ops
        paused = await ops.pause_queue("q", 0)
        assert paused.paused and not paused.was_paused
        ids = await cluster.enqueue_owned(via=node, owners=[node] * 3)
        stream = Stream(cluster, node, credits=10)
        assert list((await stream.next()).jobs) == []  # the opening's answer: nothing
        await cluster.settle()
        assert cluster.nodes[node].state.stats("q", cluster.wall())[2] == 0  # none leased
        resumed = await ops.resume_queue("q")
        assert resumed.was_paused and not resumed.paused
        pushed = []
        while len(pushed) < 3:
            pushed += [j.job_id for j in (await stream.next()).jobs]
        assert sorted(pushed) == ids
        stream.half_close()

    run(tmp_path, test)
