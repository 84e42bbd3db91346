"""answered_as_completed (dpq.services.pipelined): concurrent, bounded, in completion order."""

from __future__ import annotations

import asyncio

import pytest

from dpq.services.pipelined import answered_as_completed


async def _requests(items):
    for item in items:
        yield item


def test_answers_come_as_they_complete_and_at_most_max_inflight_run_at_once():
    async def main():
        gates = {n: asyncio.Event() for n in range(6)}
        running, most = set(), 0

        async def answer(n):
            nonlocal most
            running.add(n)
            most = max(most, len(running))
            await gates[n].wait()
            running.discard(n)
            return n * 10

        out = []

        async def collect():
            async for a in answered_as_completed(_requests(range(6)), answer, max_inflight=3):
                out.append(a)

        task = asyncio.create_task(collect())
        for n in (2, 0, 1, 5, 4, 3):  # release out of order; 3..5 start only as others end
            while n not in running:
                await asyncio.sleep(0)
            gates[n].set()
        await asyncio.wait_for(task, 5)
        assert out == [20, 0, 10, 50, 40, 30]
        assert most == 3

    asyncio.run(main())


def test_an_exception_ends_the_stream_and_cancels_the_rest():
    async def main():
        cancelled = []

        async def answer(n):
            if n == 1:
                raise PermissionError("not yours")
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.append(n)
                raise

        with pytest.raises(PermissionError):
            async for _ in answered_as_completed(_requests([0, 1, 2]), answer, max_inflight=8):
                pass
        for _ in range(3):
            await asyncio.sleep(0)
        assert sorted(cancelled) == [0, 2]

    asyncio.run(main())


def test_no_requests_no_answers():
    async def main():
        async def answer(n):
            return n

        return [a async for a in answered_as_completed(_requests([]), answer, max_inflight=1)]

    assert asyncio.run(main()) == []
