"""The jobs a consumer holds under lease, and whether it has room for more.

Flow control: a long-poll asks for jobs only while fewer than ``capacity``
are held (buffered, handed to the user, or being handled), and asks for no
more than the room left, counting what other long-polls already asked for.
Each node's long-poll may still ask for one job when the others took all the
room, so that a job on any node is picked up at once; a consumer thus holds
at most ``capacity + nodes - 1`` jobs. A node's Consume stream grants credits
by the same rule (:meth:`Held.top_up`): what it has granted and not yet
received counts as reserved.

Times here are seconds of ``Held.clock`` (``time.monotonic`` unless a test
passes a fake ``dpq.clock.Clock``; the poller, settler and keeper all read it): a lease is taken
to end ``lease`` seconds after the request that got (or extended) it was
sent, which is never later than the server's deadline, whatever its clock.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from dpq import clock as clocks
from dpq.v1 import queue_pb2


class HoldState(enum.Enum):
    """Where a held job stands."""

    HELD = "held"  # under our lease
    SETTLED = "settled"  # acked or nacked
    LOST = "lost"  # the lease ran out or was refused


@dataclass(eq=False, slots=True)
class JobRecord:
    """A job as the consumer holds it: the server's message and the lease's state."""

    pb: queue_pb2.Job
    address: str  # the node it was leased from
    deadline: float  # when our lease ends (monotonic, conservative)
    keep_until: float  # stop extending the lease after this (monotonic)
    lease_expires_at_us: int  # the server's word, or our estimate after an extension
    state: HoldState = HoldState.HELD

    @property
    def ref(self) -> queue_pb2.JobRef:
        """The lease token: job id, attempt and the lease's receipt."""
        return queue_pb2.JobRef(job_id=self.pb.job_id, attempt=self.pb.attempt,
                                receipt=self.pb.receipt)


class Held:
    """The records a consumer holds, by job id."""

    def __init__(self, capacity: int = 1, clock: clocks.Clock = clocks.monotonic) -> None:
        self.capacity = capacity
        self.clock = clock
        self._records: dict[int, JobRecord] = {}
        # Jobs whose ack or nack is on its way: done with, so they leave room
        # for new ones (a settle round trip is a Paxos commit: counting it
        # would cap a consumer at capacity / round trip).
        self._settling: set[int] = set()
        self._reserved = 0
        self._room = asyncio.Event()
        self._room.set()
        self._changed = asyncio.Event()  # replaced on every change (see ``changes``)

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[JobRecord]:
        """Every held record."""
        return list(self._records.values())

    async def wait_for_room(self) -> None:
        """Return once fewer than ``capacity`` jobs are held."""
        await self._room.wait()

    def reserve(self, max_jobs: int) -> int:
        """How many jobs one long-poll may ask for now (at least 1); counted until settled."""
        n = min(max_jobs, max(1, self.capacity - self._busy() - self._reserved))
        self._reserved += n
        return n

    def top_up(self, max_jobs: int, have: int, at_least: int = 1) -> int:
        """How many more credits a stream that has ``have`` granted and unused may grant now.

        The same rule as :meth:`reserve` for a stream holding at most
        ``max_jobs``: 0 while the consumer is full, at least 1 for a stream with
        none; 0 if that is fewer than ``at_least`` (a stream that still has
        credits tops up in bigger steps). Counted as reserved until received.
        """
        if self._busy() >= self.capacity:
            return 0
        n = min(max_jobs - have, max(1 - have, self.capacity - self._busy() - self._reserved))
        if n < max(1, at_least):
            return 0
        self._reserved += n
        return n

    @property
    def changes(self) -> asyncio.Event:
        """An event set at the next change of what is held or reserved (take it, then look)."""
        return self._changed

    def receive(self, reserved: int, records: list[JobRecord]) -> None:
        """A long-poll that reserved ``reserved`` got ``records``."""
        self._reserved -= reserved
        for record in records:
            old = self._records.get(record.pb.job_id)
            if old is not None:
                old.state = HoldState.LOST  # handed out again: our old lease is gone
            self._records[record.pb.job_id] = record
        self._update()

    def unreserve(self, reserved: int) -> None:
        """A long-poll that reserved ``reserved`` got nothing."""
        self._reserved -= reserved
        self._poke()

    def settling(self, record: JobRecord) -> None:
        """``record``'s ack or nack is on its way: it no longer takes room."""
        if self._records.get(record.pb.job_id) is record:
            self._settling.add(record.pb.job_id)
            self._update()

    def discard(self, record: JobRecord) -> None:
        """Stop holding ``record`` (settled or lost)."""
        if self._records.get(record.pb.job_id) is record:
            del self._records[record.pb.job_id]
            self._settling.discard(record.pb.job_id)
            self._update()

    def due(self, now: float, within: float) -> list[JobRecord]:
        """Held records whose lease ends within ``within`` seconds and that may be extended."""
        return [r for r in self._records.values()
                if r.state is HoldState.HELD and r.deadline - now <= within and now < r.keep_until]

    def expired(self, now: float) -> list[JobRecord]:
        """Held records whose lease has ended."""
        return [r for r in self._records.values() if r.deadline <= now]

    def _busy(self) -> int:
        return len(self._records) - len(self._settling)

    def _update(self) -> None:
        if self._busy() < self.capacity:
            self._room.set()
        else:
            self._room.clear()
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
