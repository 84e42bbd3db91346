"""Getting commands into the replicated log, in batches, exactly once.

Every part of a node that changes the queue (Enqueue and Ack handlers, the
long-poll dispatcher, lease expiry, the leader's writer) calls
:meth:`Proposer.submit` with one command and awaits its result. The proposer
packs everything submitted meanwhile into one ``CommandBatch`` (one Paxos
slot, one fsync on every node), up to ``max_inflight`` batches at once. How
long a batch waits for company follows the load (:class:`dpq.cadence.Cadence`):
a command leaves at once when no batch is in flight; while one is, the busier
the proposer, the longer the gap between two batches (2 ms at most), so a
steady trickle makes few slots instead of one per command as fast as the
round trip allows (each slot costs every node an fsync and messages,
whatever its size).

Each batch carries ``(client_id, seq)``. It is retried with the same pair —
at the new leader after a leader change, or after a timeout — and the state
machine applies it at most once (``dpq.paxos.sessions``), so a retry never
enqueues a job twice. The client id is new on every start of the process,
because ``seq`` starts again from 1.

A node and a gateway each batch with a :class:`Proposer`; only the
:class:`Router` to the leader differs (``dpq.node.router.LeaderRouter``: this
node's driver or the leader's ProposeStream; ``dpq.gateway.router``: the
leader's ProposeStream from the gateway's health view; both through
``dpq.proposing.stream``, which fails the way a unary Propose call fails).

A node cut off from its quorum cannot commit anything, and a client waiting
the proposer's whole deadline (15 s) to learn it would rather try another
node. So when the router says no leader or quorum is reachable from here
(``unavailable_reason``, see ``LeaderRouter``: no leader known for an election
timeout, and too few peers heard from in the last two), batches holding public
commands (:data:`PUBLIC_KINDS`) fail at once with :class:`Unavailable`;
internal ones (checkpoints, expiries, reassignments) keep retrying.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Protocol

import grpc

from dpq import clock as clocks
from dpq.cadence import Cadence
from dpq.errors import ResourceExhausted, Unavailable
from dpq.paxos.core import NotLeader, ProposalRefused
from dpq.paxos.sessions import DEFAULT_WINDOW
from dpq.proposing.results import Applied
from dpq.queue.validate import InvalidArgument
from dpq.v1 import log_pb2

#: How a node's refusal of new jobs starts while PostgreSQL lags the log
#: (``dpq.node.pglag``): the proposer passes it on instead of retrying until its deadline.
POSTGRES_BEHIND = "PostgreSQL is behind"

#: Commands a client is waiting on: these fail fast when no quorum is reachable.
PUBLIC_KINDS = frozenset({"enqueue", "ack", "nack", "extend", "lease"})


class SeqWindow:
    """Keeps a proposer inside the state machine's session window.

    The sessions table remembers a client's seqs only ``window`` back
    (``dpq.paxos.sessions``): seq ``s`` may be issued once every seq up to
    ``s - window`` is done. A batch stuck in retries therefore holds new ones
    back instead of being forgotten and, when it finally lands, dropped.
    """

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self._window = window
        self._open: set[int] = set()
        self._changed = asyncio.Event()

    async def admit(self, seq: int) -> None:
        while self._open and seq - min(self._open) >= self._window:
            self._changed.clear()
            await self._changed.wait()
        self._open.add(seq)

    def done(self, seq: int) -> None:
        self._open.discard(seq)
        self._changed.set()


class Router(Protocol):
    """Where a proposer's batches go: a leader, by whatever way reaches it."""

    async def propose(self, client_id: str, seq: int, batch: bytes, kinds: list[str],
                      timeout_s: float) -> Applied: ...

    def leader_address(self) -> str | None: ...

    # Optional: ``unavailable_reason() -> str | None`` (see dpq.node.router): when it
    # gives a reason, public commands fail at once instead of retrying.


class Proposer:
    """``name`` says who proposes (``node-2``, ``gateway``) in the client id."""

    def __init__(self, name: str, router: Router, *, max_batch: int = 2048,
                 max_batch_bytes: int = 8 << 20, max_inflight: int = 4,
                 cadence: Cadence | None = None, attempt_timeout_s: float = 2.0,
                 deadline_s: float = 15.0, clock: clocks.Clock = clocks.monotonic) -> None:
        self.client_id = f"{name}-{uuid.uuid4().hex[:12]}"
        self._router = router
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._slots = asyncio.Semaphore(max_inflight)
        self._cadence = cadence if cadence is not None else Cadence()
        self._attempt_timeout_s = attempt_timeout_s
        self._deadline_s = deadline_s
        self._clock = clock
        self._seq = 0
        self._window = SeqWindow()
        self._pending: list[tuple[log_pb2.Command, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()
        # Observed batch sizes (for the benchmark): commands per proposal.
        self.proposals = 0
        self.commands = 0
        #: Commands proposed, by kind (``lease``, ``ack``, ``expire``, …).
        self.kinds: Counter[str] = Counter()

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="proposer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in list(self._inflight):
            task.cancel()
        for future in [f for _, f in self._pending]:
            if not future.done():
                future.set_exception(Unavailable("node stopping", None))

    async def submit(self, command: log_pb2.Command):
        """Propose one command (batched with others); return its result."""
        _, result = await self.submit_at(command)
        return result

    async def submit_at(self, command: log_pb2.Command) -> tuple[int, object]:
        """Like :meth:`submit`, with the slot the command was committed in."""
        if command.WhichOneof("kind") in PUBLIC_KINDS:
            reason = self._unavailable_reason()
            if reason is not None:
                raise Unavailable(reason, None)
        future = asyncio.get_running_loop().create_future()
        self._pending.append((command, future))
        self._wake.set()
        return await future

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._slots.acquire()
                delay = self._cadence.delay(self._clock()) if self._inflight else 0.0
                if delay > 0 and len(self._pending) < self._max_batch:
                    await asyncio.sleep(delay)
                await self._window.admit(self._seq + 1)
                batch = self._take()
                self._cadence.sent(self._clock())
                self._seq += 1
                task = asyncio.create_task(self._run_batch(self._seq, batch))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    def _take(self) -> list[tuple[log_pb2.Command, asyncio.Future]]:
        """The next batch: up to ``max_batch`` commands and about ``max_batch_bytes``."""
        size, n = 0, 0
        for command, _ in self._pending[: self._max_batch]:
            size += command.ByteSize()
            if n and size > self._max_batch_bytes:
                break
            n += 1
        batch, self._pending = self._pending[:n], self._pending[n:]
        return batch

    async def _run_batch(self, seq: int,
                         batch: list[tuple[log_pb2.Command, asyncio.Future]]) -> None:
        try:
            commands = [c for c, _ in batch]
            data = log_pb2.CommandBatch(commands=commands).SerializeToString()
            kinds = [c.WhichOneof("kind") for c in commands]
            self.proposals += 1
            self.commands += len(commands)
            self.kinds.update(kinds)
            try:
                slot, results = await self._until_committed(seq, data, kinds)
            except Exception as exc:  # noqa: BLE001 - every waiter must hear of it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            for i, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result((slot, results[i] if results is not None else None))
        finally:
            self._window.done(seq)
            self._slots.release()

    def _unavailable_reason(self) -> str | None:
        reason = getattr(self._router, "unavailable_reason", None)
        return reason() if reason is not None else None

    async def _until_committed(self, seq: int, data: bytes, kinds: list[str]) -> Applied:
        """Retry the same (client_id, seq) until some leader commits it."""
        deadline = self._clock() + self._deadline_s
        backoff = 0.02
        last_error = "no leader elected yet"
        public = not PUBLIC_KINDS.isdisjoint(kinds)
        while self._clock() < deadline:
            if public:
                # A batch already sent may still commit, as when the deadline
                # passes: the client cannot tell either way (dedup keys make
                # its retry harmless).
                reason = self._unavailable_reason()
                if reason is not None:
                    raise Unavailable(reason, None)
            try:
                return await self._router.propose(self.client_id, seq, data, kinds,
                                                  self._attempt_timeout_s)
            except NotLeader as exc:
                last_error = str(exc)
            except ProposalRefused as exc:
                last_error = str(exc)
            except TimeoutError:
                last_error = f"not committed within {self._attempt_timeout_s}s"
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise ResourceExhausted(exc.details()) from exc
                if (exc.code() == grpc.StatusCode.UNAVAILABLE
                        and (exc.details() or "").startswith(POSTGRES_BEHIND)):
                    raise Unavailable(exc.details(), self._router.leader_address()) from exc
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    # the leader checked the batch (validate.proposal): retrying cannot help
                    raise InvalidArgument(exc.details()) from exc
                last_error = f"leader said {exc.code().name}: {exc.details()}"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.5)
        raise Unavailable(
            f"no leader committed the batch within {self._deadline_s}s ({last_error})",
            self._router.leader_address(),
        )
