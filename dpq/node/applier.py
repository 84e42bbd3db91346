"""Committed slots into the queue state machine, and their results out.

The driver hands every committed entry to :meth:`Applier.apply`, in slot
order. Whoever proposed a batch on this node (its own proposer, or a remote
proposer through the leader's Propose handler) waits on :meth:`expect` for the
results of its ``(client_id, seq)``.

Results are the state machine's typed values (``dpq.queue.results``), handed
on as they are: the same types a remote proposer reads back from the leader.

A command the state machine refuses (it broke the fixed rules every replica
applies, see ``dpq.queue.rules``) changed nothing; each one is logged here as
one error line naming the slot, the command and the reason.
"""

from __future__ import annotations

import asyncio
import logging

from google.protobuf import text_format

from dpq.paxos.types import Entry, Snapshot
from dpq.proposing.results import Applied
from dpq.queue import snapshot as snapshots
from dpq.queue.owned import OwnedJobs
from dpq.queue.state import QueueState
from dpq.v1 import log_pb2

log = logging.getLogger("dpq.node.applier")


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
                      entry.proposal.client_id[:64], entry.proposal.seq, refused.refused)
        for kind, body, result in self.state.operations:  # the audit trail of operators
            log.info("slot %d: %s {%s} from %r: %s", entry.slot, kind, _audited(body),
                     entry.proposal.client_id[:64], result)
        if not self._expected:
            return
        futures = self._expected.pop((entry.proposal.client_id, entry.proposal.seq), None)
        if futures:
            applied = Applied(entry.slot, results)
            for future in futures:
                if not future.done():
                    future.set_result(applied)

    def after_batch(self) -> None:
        """Called by the driver after each run of applied slots."""
        self.written.advance(self.state.written_slot)
        self.applied.advance(self.state.applied_slot)

    def install(self, snapshot: Snapshot, loaded: object = None) -> None:
        """A snapshot from the leader replaces the whole state.

        ``loaded``: the snapshot already loaded into a scratch state (the driver
        checks a peer's snapshot by loading it, in a thread), taken over at once;
        otherwise it is loaded here."""
        if isinstance(loaded, QueueState):
            self.state.adopt(loaded)
        else:
            self.state.reset()
            snapshots.load(snapshot.data, self.state)
        self.owned.rebuild()
        self.log_bytes = 0
        self.snapshots_installed += 1


def _command(index: int, kind: str) -> str:
    return "the whole batch" if index < 0 else f"command {index} ({kind})"


def _audited(body) -> str:
    """An operator's command for the audit line: one line, at most 300 characters, and a
    schedule's payload as its size (job data stays out of the logs)."""
    if isinstance(body, log_pb2.CreateScheduleCommand) and body.schedule.payload:
        size = len(body.schedule.payload)
        body = log_pb2.CreateScheduleCommand(schedule=body.schedule, replace=body.replace)
        body.schedule.payload = f"<{size} bytes>".encode()
    return text_format.MessageToString(body, as_one_line=True)[:300]
