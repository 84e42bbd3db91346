"""When a node stops waiting for a leader: LeaderRouter.unavailable_reason and the proposer.

Unit tests with a hand-driven clock; the real-process check (an isolated node
answers UNAVAILABLE before the client's deadline) is in test_postgres_outage.py.
"""

from __future__ import annotations

import asyncio

import pytest

from dpq.errors import Unavailable
from dpq.node.router import LeaderRouter
from dpq.paxos.core import NotLeader
from dpq.proposing.proposer import Proposer
from dpq.v1 import log_pb2, queue_pb2

E = 1.0  # election timeout, seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LeaderView:
    """What LeaderRouter reads of the replica: its id and whom it believes leads."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.leader_hint: int | None = None


def router(peers=(1, 2, 3), heard: dict[int, float] | None = None):
    clock = Clock()
    heard = heard if heard is not None else {}
    driver = type("D", (), {})()
    driver.replica = LeaderView(1)
    r = LeaderRouter(driver, None, {p: f"127.0.0.1:{7100 + p}" for p in peers}, lambda n: None,
                     election_timeout_s=E, last_heard=lambda n: heard.get(n, 0.0), clock=clock)
    return r, driver.replica, clock, heard


def test_a_node_that_just_started_waits_for_its_first_election():
    r, _, clock, _ = router()
    clock.now += 1.9 * E  # no campaign may have started yet
    assert r.unavailable_reason() is None
    clock.now += 0.2 * E
    reason = r.unavailable_reason()
    assert reason is not None and "quorum" in reason and "node 1" in reason


def test_a_leader_known_is_never_unavailable():
    r, view, clock, _ = router()
    view.leader_hint = 2
    clock.now += 100
    assert r.unavailable_reason() is None
    view.leader_hint = 1  # this node leads
    assert r.unavailable_reason() is None


def test_no_leader_but_a_quorum_heard_keeps_waiting():
    r, view, clock, heard = router()
    view.leader_hint = 2
    r.note_leader(2)
    view.leader_hint = None
    r.note_leader(None)  # an election runs
    clock.now += 5 * E
    heard[3] = clock.now - 0.5  # node 3 answers our Prepares: one peer is a quorum of 3
    assert r.unavailable_reason() is None
    heard[3] = clock.now - 3 * E  # silent for longer than a follower waits to campaign
    assert r.unavailable_reason() is not None


def test_leaderless_clock_restarts_with_each_leader():
    r, view, clock, _ = router()
    view.leader_hint = 2
    r.note_leader(2)
    clock.now += 100
    view.leader_hint = None
    r.note_leader(None)
    clock.now += 0.9 * E
    assert r.unavailable_reason() is None  # leaderless for less than E
    clock.now += 0.2 * E
    assert r.unavailable_reason() is not None


def test_five_nodes_need_two_peers_heard():
    r, _, clock, heard = router(peers=(1, 2, 3, 4, 5))
    clock.now += 10 * E
    heard[2] = clock.now
    assert r.unavailable_reason() is not None
    heard[4] = clock.now
    assert r.unavailable_reason() is None


class LostRouter:
    """A router for a node that knows no leader, and says so once ``lost`` is set."""

    def __init__(self) -> None:
        self.lost: str | None = None
        self.calls = 0

    async def propose(self, client_id, seq, batch, kinds, timeout_s):
        self.calls += 1
        raise NotLeader(None)

    def leader_address(self):
        return None

    def unavailable_reason(self):
        return self.lost


def _enqueue() -> log_pb2.Command:
    return log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
        jobs=[queue_pb2.NewJob(queue="q", priority=1, payload=b"x")], owners=[1]))


def test_public_commands_fail_at_once_internal_ones_keep_retrying():
    async def main():
        lost = LostRouter()
        proposer = Proposer("t", lost, deadline_s=0.5)
        proposer.start()
        try:
            lost.lost = "no leader or quorum is reachable from node 1"
            with pytest.raises(Unavailable, match="quorum"):
                await asyncio.wait_for(proposer.submit(_enqueue()), 0.2)
            assert lost.calls == 0  # refused before it was proposed
            checkpoint = log_pb2.Command(checkpoint=log_pb2.CheckpointCommand(written_slot=3))
            with pytest.raises(Unavailable, match="within 0.5s"):
                await asyncio.wait_for(proposer.submit(checkpoint), 5)
            assert lost.calls > 1  # retried until its own deadline
        finally:
            await proposer.stop()

    asyncio.run(main())


def test_a_batch_in_flight_fails_once_the_quorum_is_lost():
    async def main():
        lost = LostRouter()
        proposer = Proposer("t", lost, deadline_s=10)
        proposer.start()
        try:
            waiting = asyncio.ensure_future(proposer.submit(_enqueue()))
            await asyncio.sleep(0.1)
            assert not waiting.done() and lost.calls >= 1
            lost.lost = "no leader or quorum is reachable from node 1"
            with pytest.raises(Unavailable, match="quorum"):
                await asyncio.wait_for(waiting, 2)  # its next retry sees it, not the 10 s deadline
        finally:
            await proposer.stop()

    asyncio.run(main())
