"""The node's timed parts in one event loop, on a fake clock, with fake collaborators.

Long-polls, work stealing, the leader's dead-node check and the proposer's
deadline each decide what is
due from an injected ``dpq.clock.Clock``; here the test advances it, so a
60-s long-poll, a 0.5-s starvation and a 1.5-s dead-node timeout pass in
milliseconds of real time. The replicated state, the proposer and the owned
heap are stand-ins: what is tested is the timing logic, not Paxos or PostgreSQL
(real-process tests cover those: test_balancing.py, test_failover.py).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
from support.clock import FakeClock
from support.commands import Log, enqueue, lease

from dpq.errors import Unavailable
from dpq.node.dispatcher import Dispatcher
from dpq.node.health import HealthReporter
from dpq.node.leader import LeaderDuties
from dpq.node.stealer import WorkStealer
from dpq.node.transport import Transport
from dpq.paxos.core import NotLeader
from dpq.proposing.proposer import Proposer as RealProposer
from dpq.queue.owned import OwnedJobs
from dpq.queue.results import Reassigned
from dpq.v1 import log_pb2

ME, OTHER = 1, 2


class Owned:
    """This node's ready jobs: none (its consumers starve)."""

    def reserve(self, queue, max_jobs, now_us):
        return []

    def next_due_us(self, queue):
        return None

    def ready_count(self, queue, now_us):
        return 0


class Proposer:
    """Records what was proposed; a Reassign moves every job it names."""

    def __init__(self) -> None:
        self.commands = []

    async def submit(self, command):
        self.commands.append(command)
        return Reassigned(len(command.reassign.job_ids))


class State:
    """Node 2 holds a backlog of ready jobs 1..10 in queue ``q``."""

    def __init__(self) -> None:
        self.jobs = {}
        self.paused = {}
        self.configs = {}

    def ready_backlogs(self, queue):
        return {OTHER: 10} if queue == "q" else {}

    def ready_jobs_of(self, queue, owner, now_us):
        return [SimpleNamespace(job_id=i) for i in range(1, 11)] if owner == OTHER else []

    def owned_by(self, node):
        return iter([SimpleNamespace(job_id=i) for i in range(1, 11)] if node == OTHER else [])


async def settle() -> None:
    """Let the tasks woken by the test run (they wait on events, not on time)."""
    for _ in range(5):
        await asyncio.sleep(0)


def node_parts(clock: FakeClock):
    proposer = Proposer()
    dispatcher = Dispatcher(ME, State(), Owned(), proposer, max_attempts=5, clock=clock)
    stealer = WorkStealer(ME, State(), Owned(), dispatcher, proposer, idle_s=0.5, clock=clock)
    return dispatcher, stealer, proposer


def test_a_long_poll_ends_when_its_wait_passes_on_the_clock():
    async def main():
        clock = FakeClock()
        dispatcher, _, _ = node_parts(clock)
        poll = asyncio.create_task(dispatcher.dequeue("q", 1, 60_000, 30_000, "c"))
        await settle()
        assert dispatcher.waiting == 1
        clock.advance(59.9)
        dispatcher.wake(["q"])  # nothing ready: it parks again
        await settle()
        assert not poll.done() and dispatcher.waiting == 1
        clock.advance(0.1)
        dispatcher.wake(["q"])
        assert await asyncio.wait_for(poll, 1) == []
        assert dispatcher.waiting == 0
    asyncio.run(main())


def test_consumers_starving_for_idle_s_steal_half_the_largest_backlog():
    async def main():
        clock = FakeClock()
        dispatcher, stealer, proposer = node_parts(clock)
        poll = asyncio.create_task(dispatcher.dequeue("q", 1, 60_000, 30_000, "c"))
        await settle()
        assert dispatcher.starving(clock()) == {"q": clock()}
        clock.advance(0.4)
        await stealer.check()
        assert proposer.commands == []  # starving, but not for idle_s yet
        clock.advance(0.1)
        await stealer.check()
        [command] = proposer.commands
        assert list(command.reassign.job_ids) == [1, 2, 3, 4, 5]  # the most urgent half
        assert list(command.reassign.owners) == [ME] * 5
        assert stealer.stolen == 5
        await stealer.check()
        assert len(proposer.commands) == 1  # fed: its idle time starts over
        poll.cancel()
    asyncio.run(main())


def test_no_stealing_for_a_queue_its_limit_holds_back():
    class Limited(State):
        def __init__(self) -> None:
            super().__init__()
            self.configs = {"q": object()}  # a limited queue ...

        def lease_allowance(self, queue, now_us):
            return 0  # ... at its limit

    async def main():
        clock = FakeClock()
        proposer = Proposer()
        dispatcher = Dispatcher(ME, State(), Owned(), proposer, max_attempts=5, clock=clock)
        stealer = WorkStealer(ME, Limited(), Owned(), dispatcher, proposer, idle_s=0.5,
                              clock=clock)
        poll = asyncio.create_task(dispatcher.dequeue("q", 1, 60_000, 30_000, "c"))
        await settle()
        clock.advance(1.0)
        await stealer.check()
        assert proposer.commands == []  # starving by the rules, but the limit is why
        poll.cancel()
    asyncio.run(main())


def test_a_queue_nobody_parks_on_stops_starving_after_a_second():
    async def main():
        clock = FakeClock()
        dispatcher, _, _ = node_parts(clock)
        poll = asyncio.create_task(dispatcher.dequeue("q", 1, 100, 30_000, "c"))
        await settle()
        clock.advance(0.1)
        dispatcher.wake(["q"])
        assert await asyncio.wait_for(poll, 1) == []
        assert "q" in dispatcher.starving(clock())  # between two long-polls
        clock.advance(1.01)
        assert dispatcher.starving(clock()) == {}
    asyncio.run(main())


def test_the_leader_moves_the_jobs_of_a_node_unreachable_for_dead_after_s():
    async def main():
        clock = FakeClock()
        proposer = Proposer()
        reachable = {2: True, 3: True}
        duties = LeaderDuties(ME, [1, 2, 3], State(), SimpleNamespace(is_leader=True), proposer,
                              reachable.__getitem__, "postgresql://127.0.0.1:1/none",
                              writer_interval_s=0.1, dead_after_s=1.5, clock=clock)
        await duties.reassign_dead()
        reachable[OTHER] = False
        await duties.reassign_dead()  # unreachable from now on
        clock.advance(1.4)
        await duties.reassign_dead()
        assert proposer.commands == []
        reachable[OTHER] = True  # back in time: its count starts over
        await duties.reassign_dead()
        reachable[OTHER] = False
        await duties.reassign_dead()
        clock.advance(1.4)
        await duties.reassign_dead()
        assert proposer.commands == []
        clock.advance(0.1)
        await duties.reassign_dead()
        [command] = proposer.commands
        assert sorted(command.reassign.job_ids) == list(range(1, 11))
        assert set(command.reassign.owners) == {1, 3}  # spread over the live nodes
    asyncio.run(main())


def test_the_proposer_gives_up_at_its_deadline_on_the_clock():
    class NoLeader:
        """Every try takes 6 s of the clock and finds no leader."""

        def __init__(self, clock: FakeClock) -> None:
            self.clock, self.tries = clock, 0

        async def propose(self, client_id, seq, batch, kinds, timeout_s):
            self.tries += 1
            self.clock.advance(6.0)
            raise NotLeader(None)

        def leader_address(self):
            return None

    async def main():
        clock = FakeClock()
        router = NoLeader(clock)
        proposer = RealProposer("node-1", router, deadline_s=15.0, clock=clock)
        proposer.start()
        try:
            command = log_pb2.Command(checkpoint=log_pb2.CheckpointCommand(written_slot=1))
            try:
                await asyncio.wait_for(proposer.submit(command), 5)
            except Unavailable as exc:
                assert "within 15.0s" in str(exc)
            else:
                raise AssertionError("the proposer did not give up")
        finally:
            await proposer.stop()
        assert router.tries == 3  # at 6, 12 and 18 s of the clock: past the deadline
    asyncio.run(main())


def test_a_lease_expires_when_the_wall_clock_passes_its_deadline():
    # The real state machine and owned heap; job times are wall-clock microseconds,
    # stamped into the commands, so the test moves a fake wall clock past the lease.
    log = Log()
    owned = OwnedJobs(ME, log.state, 200_000)
    log.state.observer = owned
    log.run(0, enqueue((1, b"a"), owners=[ME]))
    log.run(0, lease(1, node=ME, lease_ms=1500))  # deadline: 1.5 s after time 0
    assert log.state.jobs[1].lease_expires_at_us == 1_500_000
    wall = [1_499_999]
    proposer = Proposer()
    dispatcher = Dispatcher(ME, log.state, owned, proposer, max_attempts=3,
                            clock=FakeClock(), wall_us=lambda: wall[0])

    async def main():
        assert dispatcher.expire_due() == 0 and proposer.commands == []
        wall[0] = 1_500_000
        assert dispatcher.expire_due() == 1
        await asyncio.sleep(0)
        [command] = proposer.commands
        assert [(r.job_id, r.attempt) for r in command.expire.jobs] == [(1, 1)]
        assert dispatcher.expire_due() == 0  # asked once; again only after expire_retry_s
    asyncio.run(main())


def test_the_consume_rate_follows_deliveries_over_the_clock():
    clock = FakeClock()
    dispatcher = SimpleNamespace(delivered=0, waiting=0)
    reporter = HealthReporter(ME, replica=None, owned=None, dispatcher=dispatcher,
                              applied_index=lambda: 0, counters=dict, clock=clock)
    for _ in range(20):  # 100 jobs a second for 20 s (ten half-lives)
        clock.advance(1.0)
        dispatcher.delivered += 100
        reporter.sample()
    assert 99.0 < reporter.consume_rate <= 100.0
    for _ in range(20):  # then nothing: the rate decays to ~0 over the same time
        clock.advance(1.0)
        reporter.sample()
    assert reporter.consume_rate < 0.1


def test_a_peer_counts_as_reachable_within_s_of_the_last_message_on_the_clock():
    async def main():
        clock = FakeClock()
        # A real channel that never connects (nothing dials it): only messages count.
        transport = Transport(ME, {ME: "127.0.0.1:9", OTHER: "127.0.0.1:9"}, cluster_id="c" * 32,
                              client_address="", channel=grpc.aio.insecure_channel, clock=clock)
        assert not transport.reachable(OTHER, within_s=5.0)  # never heard
        transport.heard_from(OTHER)
        clock.advance(5.0)
        assert transport.reachable(OTHER, within_s=5.0)
        clock.advance(0.001)
        assert not transport.reachable(OTHER, within_s=5.0)
        assert transport.reachable(ME, within_s=5.0)
        await transport.stop()
    asyncio.run(main())
