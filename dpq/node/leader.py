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

Reassigning a dead node's jobs
------------------------------
A node the leader has not reached for ``dead_after_s`` is declared dead: its
jobs (ready and leased) get new owners through a committed Reassign, spread
over the live nodes, so its backlog is served and its leases expire elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import psycopg

from dpq._wrr import SmoothWRR
from dpq.node.proposer import Proposer
from dpq.paxos.core import Replica
from dpq.pg import migrate, writer
from dpq.queue.state import QueueState
from dpq.v1 import log_pb2

log = logging.getLogger("dpq.node.leader")

REASSIGN_CHECK_S = 1.0


class LeaderDuties:
    def __init__(self, node_id: int, peers: list[int], state: QueueState, replica: Replica,
                 proposer: Proposer, reachable: Callable[[int], bool], dsn: str, *,
                 writer_interval_s: float, dead_after_s: float) -> None:
        self._node_id = node_id
        self._peers = sorted(peers)
        self._state = state
        self._replica = replica
        self._proposer = proposer
        self._reachable = reachable
        self._dsn = dsn
        self._interval_s = writer_interval_s
        self._dead_after_s = dead_after_s
        self._conn: psycopg.AsyncConnection | None = None
        self._written: int | None = None  # slot PostgreSQL holds, while we lead
        self._unreachable_since: dict[int, float] = {}
        # Observed batch sizes (for the benchmark): rows per transaction.
        self.transactions = 0
        self.rows = 0

    async def run(self) -> None:
        await self._migrate()
        await asyncio.gather(self._write_forever(), self._reassign_forever())

    async def _write_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            if not self._replica.is_leader:
                self._written = None
                continue
            try:
                await self._write()
            except (psycopg.Error, OSError) as exc:
                log.error("writing to PostgreSQL failed (retrying): %s", exc)
                await self._reset()

    async def _reassign_forever(self) -> None:
        while True:
            await asyncio.sleep(REASSIGN_CHECK_S)
            if not self._replica.is_leader:
                self._unreachable_since.clear()
                continue
            await self._reassign_dead()

    async def close(self) -> None:
        await self._reset()

    async def _migrate(self) -> None:
        await migrate.migrate(self._dsn)

    async def _reset(self) -> None:
        if self._conn is not None:
            await self._conn.close()
        self._conn = None
        self._written = None

    async def _write(self) -> None:
        state = self._state
        if self._conn is None:
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        if self._written is None:
            self._written = await writer.applied_slot(self._conn)
        slot = state.applied_slot
        if slot <= self._written:
            return
        touched = state.unwritten(self._written)
        if not touched:
            return  # only checkpoints since: nothing to write (and no new checkpoint to cause)
        upserts, deletes = [], []
        for job_id in touched:
            job = state.jobs.get(job_id)
            if job is None:
                deletes.append(job_id)
            else:
                upserts.append(job.copy())  # the state moves on while we await
        await writer.write_batch(self._conn, upserts, deletes, slot)
        self._written = slot
        self.transactions += 1
        self.rows += len(upserts) + len(deletes)
        checkpoint = log_pb2.Command(checkpoint=log_pb2.CheckpointCommand(written_slot=slot))
        task = asyncio.create_task(self._proposer.submit(checkpoint))
        task.add_done_callback(_log_failure)

    async def _reassign_dead(self) -> None:
        now = time.monotonic()
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
