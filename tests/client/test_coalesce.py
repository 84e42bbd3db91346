"""The client's coalescer batches by the load's cadence (dpq.client._coalesce)."""

from __future__ import annotations

import asyncio

from dpq.cadence import Cadence
from dpq.client._coalesce import Coalescer


class _Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def send(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await asyncio.sleep(0)
        return [i * 10 for i in items]


def test_a_lone_item_leaves_at_once_and_gets_its_own_answer():
    async def main():
        rec = _Recorder()
        batcher = Coalescer(rec.send, max_items=100, max_inflight=2)
        future = batcher.submit(7)
        await asyncio.sleep(0)
        assert rec.batches == [[7]]  # no timer on an idle path
        assert await future == 70

    asyncio.run(main())


def test_items_arriving_on_a_busy_path_gather_into_fewer_batches():
    async def main():
        rec = _Recorder()
        # Busy lately (a gap is due): what arrives meanwhile leaves together.
        cadence = Cadence(gap_per_rate_s=1e-3, max_gap_s=0.05)
        loop = asyncio.get_running_loop()
        for i in range(20):
            cadence.sent(loop.time() - 0.95 + i * 0.05)  # the last one just now
        batcher = Coalescer(rec.send, max_items=100, max_inflight=2, cadence=cadence)
        futures = [batcher.submit(i) for i in range(30)]
        assert rec.batches == []  # held for the gap
        assert await asyncio.gather(*futures) == [i * 10 for i in range(30)]
        assert rec.batches == [list(range(30))]

    asyncio.run(main())


def test_a_full_batch_does_not_wait_for_the_gap():
    async def main():
        rec = _Recorder()
        cadence = Cadence(gap_per_rate_s=1.0, max_gap_s=60.0)  # a gap of a minute
        loop = asyncio.get_running_loop()
        for i in range(5):
            cadence.sent(loop.time() - 0.5 + i * 0.1)
        batcher = Coalescer(rec.send, max_items=4, max_inflight=2, cadence=cadence)
        futures = [batcher.submit(i) for i in range(8)]
        results = await asyncio.wait_for(asyncio.gather(*futures), timeout=10)
        assert results == [i * 10 for i in range(8)]
        assert rec.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]

    asyncio.run(main())
