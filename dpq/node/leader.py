"""What only the leader does: write to PostgreSQL, and move a dead node's jobs.

The batched writer
------------------
Every ``writer_interval`` the leader takes the jobs the log touched since its
last write (``QueueState.unwritten``), writes their current state — or their
deletion, for acked jobs — in one transaction together with the slot they are
current as of, then proposes a Checkpoint of that slot. A new leader reads the
slot back from PostgreSQL and resumes from it, so every change reaches
PostgreSQL, and rewriting a job already written is harmless (the row just
takes the same state again).

PostgreSQL may be down or frozen: the log, not PostgreSQL, is what the queue
serves from, so the writer never stops the node. Every connect, migration and
batch runs under a time limit (``postgres_timeout_s``, plus time for large
batches); a failure closes the connection and the writer tries again with
exponential back-off (:class:`dpq.pg.outage.Outage`: one ERROR line when the
outage starts, one WARNING line when it ends). Migrations run before the
first write of this process, so a cluster started while PostgreSQL is down
creates its schema once the server is back; the jobs written then are
everything the log touched since the last checkpoint. How far PostgreSQL may
fall behind is bounded where jobs come in (``dpq.node.pglag``).

Reassigning a dead node's jobs
------------------------------
A node the leader has not reached for ``dead_after_s`` is declared dead: its
jobs (ready and leased) get new owners through a committed Reassign, spread
over the live nodes, so its backlog is served and its leases expire elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from dpq import clock as clocks
from dpq._wrr import SmoothWRR
from dpq.buckets import Buckets
from dpq.paxos.core import Replica
from dpq.pg import connect, writer
from dpq.pg.outage import Outage
from dpq.proposing.proposer import Proposer
from dpq.queue.state import JobState, QueueState
from dpq.v1 import log_pb2

log = logging.getLogger("dpq.node.leader")

REASSIGN_CHECK_S = 1.0
#: Migrations get longer than a write: a released one may rewrite a big table.
MIGRATE_TIMEOUT_S = 120.0
#: A write gets ``postgres_timeout_s`` plus this much per row (≈ 5x the
#: measured COPY time), so catching up after an outage is not cut short.
WRITE_S_PER_ROW = 50e-6
#: Waiting for a write that was cancelled to let go (its connection is closed first).
ABANDON_S = 2.0
#: Histogram buckets (dpq.buckets) of the rows one write transaction carries.
TRANSACTION_ROWS_BUCKETS = (1, 10, 100, 1_000, 10_000, 100_000)


class LeaderDuties:
    def __init__(self, node_id: int, peers: list[int], state: QueueState, replica: Replica,
                 proposer: Proposer, reachable: Callable[[int], bool], dsn: str, *,
                 writer_interval_s: float, dead_after_s: float,
                 postgres_timeout_s: float = 10.0,
                 clock: clocks.Clock = clocks.monotonic) -> None:
        self._node_id = node_id
        self._peers = sorted(peers)
        self._state = state
        self._replica = replica
        self._proposer = proposer
        self._reachable = reachable
        self._dsn = dsn
        self._interval_s = writer_interval_s
        self._dead_after_s = dead_after_s
        self._timeout_s = postgres_timeout_s
        self._clock = clock
        self._conn: psycopg.AsyncConnection | None = None
        self._migrated = False
        self.outage = Outage(log, "writing to PostgreSQL at " + connect.where(dsn),
                             first_delay_s=writer_interval_s, clock=clock)
        self._written: int | None = None  # slot PostgreSQL holds, while we lead
        # the slots whose queue settings and schedules PostgreSQL holds (None: write them
        # with the next batch)
        self._configs_written: int | None = None
        self._schedules_written: int | None = None
        self._unreachable_since: dict[int, float] = {}
        # Observed batch sizes (for the benchmark): rows per transaction.
        self.transactions = 0
        self.rows = 0
        #: For metrics: rows per transaction, failed writes, and when (by ``clock``)
        #: the last write began that left PostgreSQL holding every applied slot.
        self.transaction_rows = Buckets(TRANSACTION_ROWS_BUCKETS)
        self.errors = 0
        self.caught_up_at = clock()

    async def run(self) -> None:
        await asyncio.gather(self._write_forever(), self._reassign_forever())

    def lag_seconds(self) -> float:
        """How long PostgreSQL has lacked applied slots, on the leader: since the last
        write that began caught up (0 when nothing is pending, and on a follower)."""
        state = self._state
        if not self._replica.is_leader or state.applied_slot <= state.written_slot:
            return 0.0
        return max(0.0, self._clock() - self.caught_up_at)

    async def _write_forever(self) -> None:
        delay = self._interval_s
        while True:
            await asyncio.sleep(delay)
            delay = self._interval_s
            if not self._replica.is_leader:
                self._written = self._configs_written = self._schedules_written = None
                self.caught_up_at = self._clock()  # a new leadership starts the count anew
                continue
            lag = self._state.applied_slot - self._state.written_slot
            try:
                rows = await self._write()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                await self._reset()
                if not isinstance(exc, psycopg.Error | OSError | TimeoutError) \
                        and not self.outage.down:
                    log.error("unexpected failure of the PostgreSQL writer", exc_info=exc)
                delay = self.outage.failed(
                    connect.one_line(exc),
                    f"the log keeps serving; PostgreSQL is {lag} slots behind")
            else:
                if self.outage.down:
                    self.outage.recovered(f"wrote {rows} rows, up to slot {self._written}")

    async def _reassign_forever(self) -> None:
        while True:
            await asyncio.sleep(REASSIGN_CHECK_S)
            if not self._replica.is_leader:
                self._unreachable_since.clear()
                continue
            await self.reassign_dead()

    async def close(self) -> None:
        await self._reset()

    async def _reset(self) -> None:
        conn, self._conn = self._conn, None
        await connect.close_quietly(conn)
        self._written = self._configs_written = self._schedules_written = None

    async def _bounded(self, coro, timeout_s: float, what: str):
        """Run ``coro`` on the writer's connection; past ``timeout_s`` close the
        connection first (so nothing waits on a frozen server), then cancel."""
        task = asyncio.ensure_future(coro)
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            return task.result()
        await self._reset()
        # Its own error, whenever it comes, is retrieved: the timeout is what counts.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        task.cancel()
        await asyncio.wait({task}, timeout=ABANDON_S)
        raise TimeoutError(f"PostgreSQL did not finish {what} within {timeout_s:.1f}s")

    async def _write(self) -> int:
        """Write what the log touched since PostgreSQL's slot; return the rows written."""
        state = self._state
        if self._conn is None:
            self._conn = await connect.connect(self._dsn, self._timeout_s)
            self._written = None
        conn = self._conn
        if not self._migrated:
            await self._bounded(connect.migrate_without_statement_timeout(conn),
                                MIGRATE_TIMEOUT_S, "the migrations")
            self._migrated = True
        if self._written is None:
            self._written = await self._bounded(writer.applied_slot(conn), self._timeout_s,
                                                "reading the applied slot")
        slot, began = state.applied_slot, self._clock()
        if slot <= self._written:
            self.caught_up_at = began
            return 0
        touched = state.unwritten(self._written)
        configs = None
        if self._configs_written is None or state.config_slot > self._configs_written:
            configs = [c.to_pb(q) for q, c in sorted(state.configs.items())]
        schedules = None
        table = state.schedules
        if self._schedules_written is None or table.defined_slot > self._schedules_written:
            schedules = [entry.to_pb() for entry in table]
        if not touched and configs is None and schedules is None:
            self.caught_up_at = began
            return 0  # only checkpoints since: nothing to write (and no new checkpoint to cause)
        upserts, deletes = [], []
        for job_id in touched:
            job = state.jobs.get(job_id)
            if job is None or job.state == JobState.CANCELLED:  # acked, purged or cancelled
                deletes.append(job_id)
            else:
                upserts.append(job.copy())  # the state moves on while we await
        rows = len(upserts) + len(deletes)
        timeout_s = self._timeout_s + rows * WRITE_S_PER_ROW
        await self._bounded(
            writer.write_batch(conn, upserts, deletes, slot,
                               statement_timeout_ms=int(timeout_s * 1000), configs=configs,
                               schedules=schedules),
            timeout_s, f"a batch of {rows} rows")
        self._written = slot
        if configs is not None:
            self._configs_written = slot
        if schedules is not None:
            self._schedules_written = slot
        self.transactions += 1
        self.rows += rows
        self.transaction_rows.observe(rows)
        self.caught_up_at = began
        checkpoint = log_pb2.Command(checkpoint=log_pb2.CheckpointCommand(written_slot=slot))
        task = asyncio.create_task(self._proposer.submit(checkpoint))
        task.add_done_callback(_log_failure)
        return rows

    async def reassign_dead(self) -> None:
        """One look: move the jobs of every peer unreachable for ``dead_after_s`` (by ``clock``)."""
        now = self._clock()
        live = [p for p in self._peers if p == self._node_id or self._reachable(p)]
        for peer in self._peers:
            if peer in live:
                self._unreachable_since.pop(peer, None)
                continue
            since = self._unreachable_since.setdefault(peer, now)
            if now - since < self._dead_after_s:
                continue
            ids = [job.job_id for job in self._state.owned_by(peer)]
            if not ids:
                continue
            owners = SmoothWRR(live, [1] * len(live)).pick_many(len(ids))
            log.warning("node %d unreachable for %.1fs: moving its %d jobs to nodes %s",
                        peer, now - since, len(ids), live)
            command = log_pb2.Command(reassign=log_pb2.ReassignCommand(job_ids=ids, owners=owners))
            try:
                await self._proposer.submit(command)
            except Exception as exc:  # noqa: BLE001 - tried again on the next check
                log.warning("moving node %d's jobs failed (retrying): %s", peer, exc)


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a leader proposal failed (retried later): %s", task.exception())
