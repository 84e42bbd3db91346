"""The client's coalescer batches by the load's cadence (dpq.client._coalesce)."""

from __future__ import annotations

import asyncio

from dpq.cadence import Cadence
from dpq.client._coalesce import Coalescer


class _Recorder:
    """``send`` records each batch; while ``hold`` is set, the first batch waits for it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold: asyncio.Event | None = None

    async def send(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        if self.hold is not None and len(self.batches) == 1:
            await self.hold.wait()
        await asyncio.sleep(0)
        return [i * 10 for i in items]


def _busy(gap_per_rate_s: float, max_gap_s: float) -> Cadence:
    """A cadence that has seen 20 batches a second, the last one just now."""
    cadence = Cadence(gap_per_rate_s=gap_per_rate_s, max_gap_s=max_gap_s)
    now = asyncio.get_running_loop().time()
    for i in range(20):
        cadence.sent(now - 0.95 + i * 0.05)
    return cadence


def test_a_lone_item_leaves_at_once_and_gets_its_own_answer():
    async def main():
        rec = _Recorder()
        batcher = Coalescer(rec.send, max_items=100, max_inflight=2)
        future = batcher.submit(7)
        await asyncio.sleep(0)
        assert rec.batches == [[7]]  # no timer on an idle path
        assert await future == 70

    asyncio.run(main())


def test_with_nothing_in_flight_an_item_does_not_wait_for_the_gap():
    async def main():
        rec = _Recorder()
        batcher = Coalescer(rec.send, max_items=100, max_inflight=2,
                            cadence=_busy(1.0, 60.0))  # a gap of a minute, were it kept
        assert await asyncio.wait_for(batcher.submit(3), timeout=10) == 30
        assert rec.batches == [[3]]

    asyncio.run(main())


def test_items_arriving_while_a_batch_is_in_flight_gather_into_one_batch():
    async def main():
        rec = _Recorder()
        rec.hold = asyncio.Event()
        batcher = Coalescer(rec.send, max_items=100, max_inflight=2,
                            cadence=_busy(1e-3, 0.05))
        first = batcher.submit(-1)
        await asyncio.sleep(0)
        assert rec.batches == [[-1]]  # in flight, held
        futures = [batcher.submit(i) for i in range(30)]
        await asyncio.sleep(0)
        assert rec.batches == [[-1]]  # the rest waits for the gap
        assert await asyncio.gather(*futures) == [i * 10 for i in range(30)]
        assert rec.batches == [[-1], list(range(30))]
        rec.hold.set()
        assert await first == -10

    asyncio.run(main())


def test_a_full_batch_does_not_wait_for_the_gap():
    async def main():
        rec = _Recorder()
        rec.hold = asyncio.Event()
        batcher = Coalescer(rec.send, max_items=4, max_inflight=3,
                            cadence=_busy(1.0, 60.0))  # a gap of a minute
        first = batcher.submit(-1)
        await asyncio.sleep(0)
        futures = [batcher.submit(i) for i in range(8)]
        results = await asyncio.wait_for(asyncio.gather(*futures), timeout=10)
        assert results == [i * 10 for i in range(8)]
        assert rec.batches == [[-1], [0, 1, 2, 3], [4, 5, 6, 7]]
        rec.hold.set()
        await first

    asyncio.run(main())
