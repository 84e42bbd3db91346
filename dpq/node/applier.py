"""Committed slots into the queue state machine, and their results out.

The driver hands every committed entry to :meth:`Applier.apply`, in slot
order. Whoever proposed a batch on this node (its own proposer, or a remote
proposer through the leader's Propose handler) waits on :meth:`expect` for the
results of its ``(client_id, seq)``.

Results are normalised here to plain values, the same whether they come from
this node's apply or from the leader over gRPC (``results_to_pb`` /
``results_from_pb``):

* Enqueue → ``list[int]`` of job ids,
* Lease → ``list[Grant]``,
* Ack / Nack / Extend / Expire → ``list[str]`` of per-item errors ("" = ok),
* a command refused whole → ``str`` (the reason), others → ``None``.

A command the state machine refuses (it broke the fixed rules every replica
applies, see ``dpq.queue.rules``) changed nothing; each one is logged here as
one error line naming the slot, the command and the reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple

from dpq.paxos.types import Entry, Snapshot
from dpq.queue import snapshot as snapshots
from dpq.queue.owned import OwnedJobs
from dpq.queue.state import Job, QueueState
from dpq.v1 import replication_pb2

log = logging.getLogger("dpq.node.applier")


class Grant(NamedTuple):
    """A lease granted on a job: its token (id, attempt, receipt) and deadline."""

    job_id: int
    attempt: int
    lease_expires_at_us: int
    receipt: int


class Applied(NamedTuple):
    slot: int
    results: list | None  # None: a duplicate whose results are forgotten, or a no-op


def normalise(result):
    if isinstance(result, list) and result and isinstance(result[0], Job):
        return [Grant(j.job_id, j.attempt, j.lease_expires_at_us, j.receipt) for j in result]
    return result


class SlotWatch:
    """A slot number that only grows, and waiters for it to reach a value."""

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self._waiters: list[tuple[int, asyncio.Future]] = []

    def advance(self, value: int) -> None:
        if value <= self.value:
            return
        self.value = value
        still = []
        for target, future in self._waiters:
            if target <= value:
                if not future.done():
                    future.set_result(None)
            elif not future.done():
                still.append((target, future))
        self._waiters = still

    async def wait_for(self, target: int) -> None:
        if self.value >= target:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        await future


class Applier:
    def __init__(self, state: QueueState, owned: OwnedJobs) -> None:
        self.state = state
        self.owned = owned
        self._expected: dict[tuple[str, int], list[asyncio.Future]] = {}
        #: The slot up to which PostgreSQL holds every change (from Checkpoints).
        self.written = SlotWatch(state.written_slot)
        #: The last slot applied here.
        self.applied = SlotWatch(state.applied_slot)
        #: Bytes of the entries applied since the last snapshot: the Paxos log
        #: keeps them in memory until a snapshot lets it drop them.
        self.log_bytes = 0
        #: Snapshots received from a peer (the leader) and loaded here.
        self.snapshots_installed = 0

    def expect(self, client_id: str, seq: int) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._expected.setdefault((client_id, seq), []).append(future)
        return future

    def forget(self, client_id: str, seq: int, future: asyncio.Future) -> None:
        waiting = self._expected.get((client_id, seq))
        if waiting and future in waiting:
            waiting.remove(future)
            if not waiting:
                del self._expected[(client_id, seq)]

    def fail_all(self, exc: BaseException) -> None:
        """Leadership changed: proposals waited on here may never be chosen."""
        expected, self._expected = self._expected, {}
        for futures in expected.values():
            for future in futures:
                if not future.done():
                    future.set_exception(exc)

    def apply(self, entry: Entry) -> None:
        results = self.state.apply(entry.slot, entry.proposal)
        self.log_bytes += len(entry.proposal.data)
        for refused in self.state.refusals:
            log.error("slot %d: %s of proposal %r seq %d refused, nothing changed: %s",
                      entry.slot, _command(refused.index, refused.kind),
                      entry.proposal.client_id[:64], entry.proposal.seq, refused.reason)
        if not self._expected:
            return
        futures = self._expected.pop((entry.proposal.client_id, entry.proposal.seq), None)
        if futures:
            applied = Applied(entry.slot,
                              None if results is None else [normalise(r) for r in results])
            for future in futures:
                if not future.done():
                    future.set_result(applied)

    def after_batch(self) -> None:
        """Called by the driver after each run of applied slots."""
        self.written.advance(self.state.written_slot)
        self.applied.advance(self.state.applied_slot)

    def install(self, snapshot: Snapshot) -> None:
        """A snapshot from the leader replaces the whole state."""
        self.state.reset()
        snapshots.load(snapshot.data, self.state)
        self.owned.rebuild()
        self.log_bytes = 0
        self.snapshots_installed += 1


def results_to_pb(results: list | None) -> list[replication_pb2.CommandResult]:
    out = []
    for result in results or ():
        item = replication_pb2.CommandResult()
        if isinstance(result, str):
            item.error = result
        elif isinstance(result, list) and result and isinstance(result[0], Grant):
            for g in result:
                item.jobs.add(job_id=g.job_id, attempt=g.attempt,
                              lease_expires_at_us=g.lease_expires_at_us, receipt=g.receipt)
        elif isinstance(result, list) and result and isinstance(result[0], str):
            item.errors.extend(result)
        elif isinstance(result, list):
            item.job_ids.extend(result)
        out.append(item)
    return out


def results_from_pb(items, kinds: list[str]) -> list:
    """Back to plain values; ``kinds`` are the commands' oneof names, in order."""
    out = []
    for item, kind in zip(items, kinds):
        if item.error:
            out.append(item.error)
        elif kind == "enqueue":
            out.append(list(item.job_ids))
        elif kind == "lease":
            out.append([Grant(j.job_id, j.attempt, j.lease_expires_at_us, j.receipt)
                        for j in item.jobs])
        elif kind in ("ack", "nack", "extend", "expire"):
            out.append(list(item.errors))
        else:
            out.append(None)
    return out


def _command(index: int, kind: str) -> str:
    return "the whole batch" if index < 0 else f"command {index} ({kind})"
