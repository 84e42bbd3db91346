"""The client's lease keeper and retries in one event loop, on a fake clock.

No server: the keeper's settler is a stand-in that records what it was asked
to extend (the ExtendLease RPC itself is tested against real nodes in
test_consumer.py); time passes when the test advances the clock.
"""

from __future__ import annotations

import asyncio

import pytest
from support.clock import FakeClock

from dpq.client import ExponentialBackoff
from dpq.client._endpoints import Channels, Endpoints
from dpq.client._held import Held, HoldState, JobRecord
from dpq.client._keeper import LeaseKeeper
from dpq.client._retry import Retry, RetryPolicy, exponential, with_retries
from dpq.client.errors import ServerError
from dpq.v1 import queue_pb2

LEASE_S = 1.5


class Extender:
    """The settler's ``extend``: grants (or refuses) every extension, as a node would."""

    def __init__(self, held: Held, refuse: bool = False) -> None:
        self.held, self.refuse = held, refuse
        self.calls: list[list[int]] = []

    async def extend(self, records, lease_ms, within=None) -> list[str]:
        self.calls.append([r.pb.job_id for r in records])
        if self.refuse:
            return ["lease lost"] * len(records)
        for r in records:
            r.deadline = max(r.deadline, self.held.clock() + lease_ms / 1000)
        return [""] * len(records)


def hold(held: Held, job_id: int, max_hold_s: float = 3600.0) -> JobRecord:
    now = held.clock()
    record = JobRecord(queue_pb2.Job(job_id=job_id, attempt=1), "127.0.0.1:1", now + LEASE_S,
                       now + max_hold_s, 0)
    held.receive(held.reserve(1), [record])
    return record


def keeper_for(held: Held, **kw) -> tuple[LeaseKeeper, Extender]:
    extender = Extender(held, **kw)
    return LeaseKeeper(held, extender, LEASE_S, 0.5), extender


async def run_for(keeper: LeaseKeeper, clock: FakeClock, seconds: float) -> None:
    """What ``keeper.run`` does over ``seconds`` of the fake clock: a round per tick."""
    for _ in range(round(seconds / keeper.tick)):
        clock.advance(keeper.tick)
        await keeper.once()


def test_the_keeper_extends_a_lease_held_past_two_lease_lengths():
    async def main():
        clock = FakeClock()
        held = Held(capacity=4, clock=clock)
        keeper, extender = keeper_for(held)
        record = hold(held, 7)
        await run_for(keeper, clock, 3.5)  # the old test's sleep, now fake time
        assert record.state is HoldState.HELD and held.records() == [record]
        assert len(extender.calls) >= 3  # extended every ~0.75 s (half a lease left)
        assert record.deadline > clock() + LEASE_S / 2
    asyncio.run(main())


def test_a_lease_the_server_refuses_to_extend_is_lost():
    async def main():
        clock = FakeClock()
        held = Held(capacity=4, clock=clock)
        keeper, extender = keeper_for(held, refuse=True)
        record = hold(held, 8)
        await run_for(keeper, clock, LEASE_S / 2 + keeper.tick)
        assert extender.calls == [[8]]
        assert record.state is HoldState.LOST and held.records() == []
    asyncio.run(main())


def test_a_lease_not_extended_past_max_hold_runs_out():
    async def main():
        clock = FakeClock()
        held = Held(capacity=4, clock=clock)
        keeper, extender = keeper_for(held)
        record = hold(held, 9, max_hold_s=1.0)
        await run_for(keeper, clock, 0.9)
        assert extender.calls == [[9]]  # due at 0.75 s, before max_hold
        await run_for(keeper, clock, 2.0)  # past max_hold: never extended again
        assert extender.calls == [[9]]
        assert record.state is HoldState.LOST and held.records() == []
    asyncio.run(main())


def retrying(clock: FakeClock, policy: RetryPolicy, step_s: float):
    """``with_retries`` over an attempt that fails, each try taking ``step_s`` of the clock."""
    tries = []

    async def attempt(address: str) -> None:
        tries.append(address)
        clock.advance(step_s)
        raise Retry("busy node", move_on=False)

    async def main():
        endpoints = Endpoints(Channels(), ["127.0.0.1:1"])
        with pytest.raises(ServerError) as failed:
            await with_retries(endpoints, policy, "Enqueue", attempt, clock=clock)
        return failed.value
    return asyncio.run(main()), tries


def test_retries_stop_at_the_deadline_on_the_injected_clock():
    fast = RetryPolicy(max_attempts=100, deadline=60.0, initial_backoff=0.001, max_backoff=0.001)
    error, tries = retrying(FakeClock(), fast, step_s=25.0)
    assert len(tries) == 3  # 25, 50, 75 s: the third try ends past the 60-s deadline
    assert "gave up after 3 attempts" in str(error)


def test_retries_stop_at_max_attempts_when_the_deadline_is_far():
    fast = RetryPolicy(max_attempts=4, deadline=60.0, initial_backoff=0.001, max_backoff=0.001)
    error, tries = retrying(FakeClock(), fast, step_s=0.001)
    assert len(tries) == 4 and "gave up after 4 attempts" in str(error)


def test_both_backoffs_follow_the_one_exponential_curve_with_their_own_jitter():
    nack = ExponentialBackoff(base=1.0, cap=300.0, jitter=0.1)
    for attempt, full in [(1, 1.0), (2, 2.0), (4, 8.0), (20, 300.0)]:
        assert full * 0.9 <= nack(attempt) <= full  # shortened by at most 10 %
    assert ExponentialBackoff(jitter=0)(0) == 1.0  # attempt 0 counts as the first
    rpc = RetryPolicy(initial_backoff=0.05, max_backoff=2.0, multiplier=2.0, busy_backoff=0.5)
    for retry, cap in [(0, 0.05), (3, 0.4), (10, 2.0)]:
        assert all(cap / 2 <= rpc.backoff(retry) <= cap for _ in range(50))  # equal jitter
    assert all(0.25 <= rpc.backoff(0, busy=True) <= 0.5 for _ in range(50))
    assert exponential(0.05, 2.0, 2.0, 1000) == 2.0  # no overflow far out
