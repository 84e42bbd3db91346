"""Three real nodes in one event loop: replication, leases, stealing and failover on fake time.

Built by ``support.inprocess``: the real replica, driver, WAL, state machine,
proposer, router, dispatcher and stealer of each node, a fake peer network, the
leader's real Propose handler called in process, and one fake monotonic and one
fake wall clock shared by the nodes. Paxos ticks, lease expiry and stealing
happen when the test says; each test takes milliseconds of real time. The
real-process tests (test_cluster.py, test_failover.py, test_balancing.py) prove
the same over gRPC and PostgreSQL.
"""

from __future__ import annotations

import asyncio

from support.inprocess import InProcessCluster

from dpq.paxos.messages import Accepted
from dpq.queue.state import JobState
from dpq.v1 import queue_pb2


def run(tmp_path, test) -> None:
    async def main():
        async with InProcessCluster(tmp_path) as cluster:
            await test(cluster)
    asyncio.run(main())


def same_everywhere(cluster: InProcessCluster, nodes=None):
    """True once the given nodes (default all) applied the same slot and hold the same jobs."""
    states = [cluster.nodes[n].state for n in (nodes or cluster.node_ids)]
    first = states[0]
    return all(s.applied_slot == first.applied_slot
               and {j.job_id: j.as_tuple() for j in s.jobs.values()}
               == {j.job_id: j.as_tuple() for j in first.jobs.values()} for s in states)


def test_a_job_enqueued_through_a_follower_is_committed_everywhere_and_leased_elsewhere(tmp_path):
    async def test(cluster: InProcessCluster):
        leader = await cluster.elect()
        via, consumer = cluster.followers()
        jobs = [queue_pb2.NewJob(queue="q", priority=1, payload=b"p%d" % i) for i in range(3)]
        # The follower forwards the batch on its ProposeStream to the leader; its
        # owners are spread over the three nodes.
        ids = await cluster.nodes[via].ops.enqueue(jobs)
        assert len(ids) == 3
        assert cluster.nodes[via].router.streams_opened == 1
        await cluster.until(lambda: same_everywhere(cluster), "all three apply the enqueue")
        for state in cluster.states().values():
            assert sorted(state.jobs) == sorted(ids)
            assert {j.owner for j in state.jobs.values()} == {1, 2, 3}
        [mine] = [i for i in ids if cluster.nodes[consumer].state.jobs[i].owner == consumer]

        [job] = await cluster.dequeue(consumer, max_jobs=3, lease_ms=30_000)
        assert (job.job_id, job.attempt, job.payload) == (mine, 1, b"p%d" % ids.index(mine))
        assert job.lease_expires_at_us == cluster.wall() + 30_000_000  # the leader's stamp
        await cluster.until(lambda: same_everywhere(cluster), "all three apply the lease")
        for state in cluster.states().values():
            leased = state.jobs[mine]
            assert (leased.state, leased.attempt, leased.consumer_id) == (
                JobState.LEASED, 1, "consumer")
            assert leased.receipt == job.receipt
        assert leader not in (via, consumer)
    run(tmp_path, test)


def test_a_lease_not_acked_expires_on_the_wall_clock_and_the_job_comes_back_as_attempt_2(
        tmp_path):
    async def test(cluster: InProcessCluster):
        await cluster.elect()
        owner = cluster.followers()[0]
        [job_id] = await cluster.enqueue_owned(via=owner, owners=[owner])
        [first] = await cluster.dequeue(owner, lease_ms=1000)
        assert (first.job_id, first.attempt) == (job_id, 1)
        dispatcher = cluster.nodes[owner].dispatcher

        cluster.advance(0.999)
        assert dispatcher.expire_due() == 0  # 1 ms left
        assert await cluster.dequeue(owner) == []  # still leased
        cluster.advance(0.001)
        assert dispatcher.expire_due() == 1
        await cluster.until(
            lambda: same_everywhere(cluster)
            and cluster.nodes[owner].state.jobs[job_id].state == JobState.READY,
            "the Expire is applied everywhere")

        [second] = await cluster.dequeue(owner, lease_ms=1000)
        assert (second.job_id, second.attempt) == (job_id, 2)
        assert second.receipt != first.receipt
        ops = cluster.nodes[owner].ops
        stale = queue_pb2.JobRef(job_id=job_id, attempt=1, receipt=first.receipt)
        [refused] = await ops.ack([stale])
        assert refused  # the first consumer's lease is gone: its ack is refused
        current = queue_pb2.JobRef(job_id=job_id, attempt=2, receipt=second.receipt)
        assert await ops.ack([current]) == [""]
        await cluster.until(lambda: same_everywhere(cluster), "the Ack is applied everywhere")
        assert all(not state.jobs for state in cluster.states().values())
    run(tmp_path, test)


def test_consumers_starving_on_one_node_steal_half_of_another_nodes_backlog(tmp_path):
    async def test(cluster: InProcessCluster):
        leader = await cluster.elect()
        hungry, busy = cluster.followers()
        ids = await cluster.enqueue_owned(via=leader, owners=[busy] * 10)
        await cluster.until(lambda: same_everywhere(cluster), "the backlog is everywhere")
        node = cluster.nodes[hungry]

        poll = asyncio.create_task(cluster.dequeue(hungry, wait_ms=60_000))
        await cluster.settle()
        assert node.dispatcher.waiting == 1
        cluster.advance(0.4)
        await node.stealer.check()
        assert node.stealer.stolen == 0  # starving, but not for idle_s (0.5 s) yet
        assert not poll.done()
        cluster.advance(0.1)
        await node.stealer.check()
        assert node.stealer.stolen == 5

        [job] = await asyncio.wait_for(poll, 5)  # woken by the applied Reassign
        assert job.job_id in ids and job.attempt == 1
        await cluster.until(lambda: same_everywhere(cluster), "the steal is everywhere")
        for state in cluster.states().values():
            owners = [state.jobs[i].owner for i in ids]
            assert owners.count(hungry) == 5 and owners.count(busy) == 5
            assert state.jobs[job.job_id].owner == hungry
        assert node.dispatcher.waiting == 0
    run(tmp_path, test)


def test_a_proposal_retried_at_a_new_leader_after_a_partition_applies_once(tmp_path):
    async def test(cluster: InProcessCluster):
        old = await cluster.elect()
        via, other = cluster.followers()
        # The followers accept the batch, but their answers never reach the
        # leader: it is chosen by a quorum the leader does not know about.
        lost = []
        undo = cluster.net.drop_if(
            lambda m: isinstance(m, Accepted) and m.dst == old and lost.append(m) is None)
        job = queue_pb2.NewJob(queue="q", priority=1, payload=b"once")
        enqueue = asyncio.create_task(cluster.nodes[via].ops.enqueue([job]))
        await cluster.until(lambda: len(lost) >= 2, "both followers accept the batch")
        assert not enqueue.done()
        undo()
        cluster.net.cut(old)

        new = await cluster.elect()  # ticks every node, the cut one too
        assert new != old
        while cluster.nodes[old].replica.is_leader:  # check-quorum: it steps down
            await cluster.tick(nodes=[old])
        # The old leader's stream fails; the follower's proposer retries the same
        # (client id, seq) at the new leader, which already holds the batch.
        [job_id] = await asyncio.wait_for(enqueue, 5)
        proposer = cluster.nodes[via].proposer
        assert proposer.proposals == 1  # one batch, proposed at two leaders
        twice = [slot for slot, client, seq in cluster.nodes[new].applied
                 if (client, seq) == (proposer.client_id, 1)]
        assert len(twice) == 2, twice  # chosen by the old quorum, and again as the retry
        await cluster.until(lambda: same_everywhere(cluster, [via, other]),
                            "the majority agrees")
        for n in (via, other):
            state = cluster.nodes[n].state
            assert list(state.jobs) == [job_id]
            assert state.jobs[job_id].payload == b"once"

        cluster.net.heal(old)
        for _ in range(50):
            if same_everywhere(cluster) and cluster.leader() == new:
                break
            await cluster.tick()
        assert cluster.leader() == new
        assert same_everywhere(cluster)
        assert list(cluster.nodes[old].state.jobs) == [job_id]  # once, on every node
    run(tmp_path, test)


def test_the_leader_moves_the_jobs_of_a_node_cut_off_for_dead_after_s(tmp_path):
    async def test(cluster: InProcessCluster):
        leader = await cluster.elect()
        dead, live = cluster.followers()
        ids = await cluster.enqueue_owned(via=leader, owners=[dead] * 4)
        await cluster.until(lambda: same_everywhere(cluster), "the jobs are everywhere")
        cluster.net.cut(dead)
        duties = cluster.nodes[leader].duties
        await duties.reassign_dead()  # unreachable from now on (dead_after_s: 1.5 s)
        cluster.advance(1.4)
        await duties.reassign_dead()
        assert {cluster.nodes[leader].state.jobs[i].owner for i in ids} == {dead}  # not yet
        cluster.advance(0.1)
        await duties.reassign_dead()  # returns once the Reassign is applied on the leader
        await cluster.until(lambda: same_everywhere(cluster, [leader, live]),
                            "the Reassign reaches the live follower")
        for n in (leader, live):
            owners = sorted(cluster.nodes[n].state.jobs[i].owner for i in ids)
            assert owners == sorted([leader, live] * 2)  # spread over the live nodes
        assert [j.owner for j in cluster.nodes[dead].state.jobs.values()] == [dead] * 4
    run(tmp_path, test)
