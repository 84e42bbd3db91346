"""The memory budget counts what jobs really cost, not just their payloads.

``NodeOperations`` checks the budget for its own Enqueue and for batches
forwarded to it (``admit_forwarded``, which also validates them) with
``QueueState.cost_of``: zero-byte payloads with long queue names and dedup
keys still run into it, and nothing is proposed when they do.
"""

from __future__ import annotations

import asyncio

import pytest
from support.commands import MEMBERS, Log, ack, enqueue

from dpq.errors import ResourceExhausted
from dpq.node.config import QueuePolicy
from dpq.node.operations import NodeOperations
from dpq.queue.commands import batch_of
from dpq.queue.state import JOB_OVERHEAD, QueueState
from dpq.queue.validate import InvalidArgument
from dpq.v1 import log_pb2, queue_pb2


class NoProposals:
    async def submit(self, command):
        raise AssertionError(f"nothing may be proposed: {command}")

    submit_at = submit


def operations(state: QueueState, budget: int) -> NodeOperations:
    policy = QueuePolicy(memory_budget_bytes=budget, dedup_window_ms=60_000)
    return NodeOperations(1, sorted(MEMBERS), state, NoProposals(), None, policy,
                          lambda node: True, None, lambda: None)


def empty_jobs(n: int) -> list[queue_pb2.NewJob]:
    return [queue_pb2.NewJob(queue="q" * 128, priority=1, dedup_key=f"{i:0256d}") for i in range(n)]


def test_empty_payloads_with_long_names_and_keys_still_count():
    log = Log()
    jobs = empty_jobs(100)
    cost = log.state.cost_of(jobs, 60_000_000)
    assert cost > 100 * (JOB_OVERHEAD + 256)
    log.run(0, enqueue(*jobs, dedup_window_ms=60_000))
    assert log.state.payload_bytes == 0 and log.state.held_bytes == cost
    ops = operations(log.state, budget=cost + 10_000)
    more = empty_jobs(100)
    with pytest.raises(ResourceExhausted, match="memory budget"):
        asyncio.run(ops.enqueue(more))
    forwarded = batch_of(log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
        jobs=more, owners=[1] * len(more), dedup_window_us=60_000_000)))
    with pytest.raises(ResourceExhausted, match="memory budget"):
        ops.admit_forwarded(forwarded)


def test_acks_always_get_through_and_junk_never_does():
    log = Log()
    ops = operations(log.state, budget=0)  # over budget from the first job
    decoded = ops.admit_forwarded(batch_of(ack((1, 1))))
    assert decoded.commands[0].WhichOneof("kind") == "ack"
    with pytest.raises(InvalidArgument, match="^batch: 4 bytes that do not decode"):
        ops.admit_forwarded(b"junk")
    with pytest.raises(InvalidArgument, match=r"commands\[0\].enqueue.jobs\[0\].payload"):
        ops.admit_forwarded(batch_of(enqueue(queue_pb2.NewJob(priority=1, payload=bytes(3 << 20)))))


# ----------------------------------------------------------- shares by priority

def test_each_priority_may_fill_its_share_of_the_budget_the_least_urgent_first():
    from dpq.queue import budget as shares

    assert [shares.limit_for(p, 1000) for p in range(1, 6)] == [1000, 950, 900, 850, 800]
    assert shares.refusal(790, 10, 5, 1000) is None
    why = shares.refusal(790, 11, 5, 1000)
    assert "801" not in why and "800 bytes, the 80 %" in why and "priority-5" in why
    assert shares.refusal(990, 10, 1, 1000) is None
    assert shares.least_urgent([queue_pb2.NewJob(priority=p) for p in (1, 4, 2)]) == 4


def test_a_budget_filled_with_priority_5_refuses_priority_5_and_takes_priority_1():
    log = Log()
    filler = [queue_pb2.NewJob(queue="q", priority=5, payload=b"x" * 1000) for _ in range(80)]
    log.run(0, enqueue(*filler))
    held = log.state.held_bytes
    ops = operations(log.state, budget=held * 100 // 80)  # priority 5 has filled its 80 %
    with pytest.raises(ResourceExhausted, match="priority-5"):
        asyncio.run(ops.enqueue([queue_pb2.NewJob(queue="q", priority=5, payload=b"y")]))
    mixed = [queue_pb2.NewJob(queue="q", priority=1), queue_pb2.NewJob(queue="q", priority=5)]
    with pytest.raises(ResourceExhausted, match="priority-5"):  # held to its least urgent
        ops.admit_forwarded(batch_of(log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
            jobs=mixed, owners=[1, 1]))))
    urgent = batch_of(log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
        jobs=[queue_pb2.NewJob(queue="q", priority=1, payload=b"z")], owners=[1])))
    assert ops.admit_forwarded(urgent).commands[0].enqueue.jobs[0].priority == 1
