"""The consumer's local order (``dpq.client._ordered``): most urgent first by aged key.

In-process, no network: records are made by hand, as the long-polls would.
"""

from __future__ import annotations

import asyncio

from dpq.client._held import JobRecord
from dpq.client._ordered import UrgentFirst, urgency
from dpq.v1 import queue_pb2

STEP = 5_000_000  # the nodes' default aging step, µs
T = 1_700_000_000_000_000


def record(job_id: int, priority: int, ready: int, step: int = STEP,
           address: str = "node") -> JobRecord:
    pb = queue_pb2.Job(job_id=job_id, priority=priority, created_at_us=ready, ready_at_us=ready,
                       aging_step_us=step)
    return JobRecord(pb, address, 0.0, 0.0, 0)


def ids(records: list[JobRecord]) -> list[int]:
    return [r.pb.job_id for r in records]


def test_aged_key_puts_an_urgent_job_first_and_lets_an_old_one_overtake():
    buffer = UrgentFirst()
    buffer.put(record(1, 5, T, address="a"))  # aged key T + 20 s
    buffer.put(record(2, 1, T + 1_000, address="b"))  # T + 1 ms
    buffer.put(record(3, 3, T, address="c"))  # T + 10 s
    buffer.put(record(4, 5, T - 30_000_000, address="a"))  # waited 30 s: T - 10 s
    buffer.put(record(5, 1, T + 1_000, address="c"))  # same key as 2: by job id
    assert ids(buffer.drain()) == [4, 2, 5, 3, 1]
    assert len(buffer) == 0


def test_strict_priority_and_jobs_from_older_nodes_order_by_priority_then_time():
    assert urgency(record(1, 2, T, step=0).pb) < urgency(record(2, 3, T - 10**9, step=0).pb)
    assert urgency(record(1, 2, T, step=0).pb) < urgency(record(2, 2, T + 1, step=0).pb)
    old = queue_pb2.Job(job_id=7, priority=4, created_at_us=T)  # no ready_at_us, no step
    assert urgency(old) == (0, 4, T, 7)


def test_a_held_job_is_overtaken_by_a_more_urgent_one_that_arrives_later():
    async def scenario() -> list[int]:
        buffer = UrgentFirst()
        buffer.put(record(1, 5, T))
        buffer.put(record(2, 4, T))
        buffer.put(record(3, 1, T + 2_000))  # arrives last, from another node
        first = await buffer.get()
        buffer.put(record(4, 2, T + 3_000))
        rest = [await buffer.get() for _ in range(3)]
        return ids([first, *rest])  # type: ignore[list-item]

    assert asyncio.run(scenario()) == [3, 4, 2, 1]


def test_a_lone_job_goes_straight_to_a_waiting_getter_and_a_wake_up_goes_first():
    async def scenario() -> None:
        buffer = UrgentFirst()
        waiting = asyncio.ensure_future(buffer.get())
        await asyncio.sleep(0)
        buffer.put(record(9, 5, T))
        # no batching window: the getter has it after one turn of the loop
        await asyncio.sleep(0)
        assert waiting.done() and waiting.result().pb.job_id == 9
        buffer.put(record(10, 1, T))
        buffer.wake()
        assert await buffer.get() is None
        assert ids([await buffer.get()]) == [10]  # type: ignore[list-item]

    asyncio.run(scenario())
