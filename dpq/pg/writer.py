"""The leader's batched PostgreSQL writer.

Every node applies the same committed log to its state machine; only the
leader writes PostgreSQL. After some committed slots it takes the jobs touched
since its last write and calls :func:`write_batch` with the current state of
each (``upserts``), the ids of the jobs that are gone (acked: ``deletes``) and
the last slot applied (``applied_slot``). One transaction writes them and moves
``dpq_cluster.applied_slot``, so PostgreSQL always holds the queue exactly as of
one slot, and a new leader resumes from :func:`applied_slot`.

How a batch is written (measured in ``bench/bench_pgwriter.py``):

1. ``SELECT … FOR UPDATE`` on the cluster row: writers take turns, and a batch
   whose slot is not newer than the stored one is dropped whole (see below).
2. Jobs with an id above ``max(job_id)`` have no row, and no other writer can
   add one meanwhile (it waits on the cluster row): they go in with a plain
   binary ``COPY`` into ``jobs``, no conflict check. Ids are handed out in log
   order, so in steady state these are all the jobs enqueued since the last
   batch; the caller need not say which jobs are new.
3. The other upserts (leases, nacks, reassignments of written jobs) are copied
   into a session temp table (``ON COMMIT DELETE ROWS``, created once per
   connection: no catalog churn per batch) and merged with ``INSERT … SELECT …
   ON CONFLICT (job_id) DO UPDATE … WHERE jobs.updated_slot <
   EXCLUDED.updated_slot``.
4. ``DELETE … WHERE job_id = ANY(…)`` for the acked jobs.
5. ``UPDATE dpq_cluster SET applied_slot = … WHERE applied_slot < …``.

The lock and ``max(job_id)`` share one pipelined round trip, and so do the
merge, the delete and the slot update. Rows are encoded here into PostgreSQL's
binary COPY format and streamed in ~64 KiB pieces; the state machine's microsecond times become
``timestamptz`` exactly (both count microseconds; 0 means "none" for the lease
deadline, "" for the consumer: both NULL). ``updated_slot`` of every
written row is the batch's ``applied_slot``: the row is the job as of that slot.

A stale writer. A leader that lost its leadership may still hold a batch. Its
content is a prefix of the same log, so a batch whose ``applied_slot`` is not
newer than the stored one is already in PostgreSQL (or superseded): writing it
would only move rows back in time, and re-insert jobs acked since. So the
whole batch is dropped: nothing is written, the transaction ends, and
:func:`write_batch` returns the stored slot, greater than or equal to the
batch's, which tells the caller it is behind (equal: an earlier try of this
same batch committed, e.g. when the connection broke before the commit's
answer came back). A batch with a newer slot is correct from any writer, since
every replica's state at a slot is the same.

The caller's side of the contract: ``upserts`` and ``deletes`` must together
cover every job touched after the stored ``applied_slot`` (not only after the
caller's own last write), each id at most once. After an exception the outcome
of the commit is unknown: keep the touched jobs and write them again (the
state machine's Checkpoint command, proposed only after ``write_batch``
returned, does exactly this).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Loader
from psycopg.types.json import Jsonb

from dpq.pg.queries import QUERIES
from dpq.queue.state import Job, JobState
from dpq.v1 import queue_pb2

#: PostgreSQL counts timestamps in microseconds from 2000-01-01 UTC.
PG_EPOCH_US = 946_684_800_000_000

_STATE_NAMES = {JobState.READY: "ready", JobState.LEASED: "leased", JobState.DEAD: "dead"}
_STATES = {name: state for state, name in _STATE_NAMES.items()}

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)
_I32 = struct.Struct(">i")
# Field count, then (length, value) of job_id, priority, created_at, attempts,
# owner_node, deliver_after, updated_slot; then lease_expires_at (a value, or
# NULL) and the payload's length — the column order of copy_jobs/copy_stage
# (after the payload: queue, state, consumer_id, then last_error and fairness_key).
_FIXED_HEAD = ">h iq ii iq ii ii iq iq"
_ROW_WITH_LEASE = struct.Struct(_FIXED_HEAD + " iq i").pack
_ROW_NO_LEASE = struct.Struct(_FIXED_HEAD + " i i").pack
CHUNK_BYTES = 64 * 1024


def copy_chunks(jobs: Sequence[Job], slot: int) -> Iterator[bytes]:
    """``jobs`` as a binary COPY stream in ``copy_jobs``'s column order, in ~64 KiB pieces.

    Sending each piece as soon as it is ready lets the server parse rows while
    the next ones are encoded (a third faster for 1,000 rows than one buffer).
    """
    out: list[bytes] = [_COPY_HEADER]
    append = out.append
    size = 0
    tails: dict[tuple[str, int, str], bytes] = {}  # (queue, state, consumer) -> encoded
    e = PG_EPOCH_US
    for job in jobs:
        payload = job.payload
        lease = job.lease_expires_at_us
        if lease:
            head = _ROW_WITH_LEASE(
                14, 8, job.job_id, 4, job.priority, 8, job.created_at_us - e, 4, job.attempt,
                4, job.owner, 8, job.ready_at_us - e, 8, slot, 8, lease - e, len(payload),
            )
        else:
            head = _ROW_NO_LEASE(
                14, 8, job.job_id, 4, job.priority, 8, job.created_at_us - e, 4, job.attempt,
                4, job.owner, 8, job.ready_at_us - e, 8, slot, -1, len(payload),
            )
        key = (job.queue, job.state, job.consumer_id)
        tail = tails.get(key)
        if tail is None:
            tail = tails[key] = _encode_tail(*key)
        append(head)
        append(payload)
        append(tail)
        for text in (job.last_error, job.fairness_key):
            if text:
                encoded = text.encode()
                append(_I32.pack(len(encoded)))
                append(encoded)
            else:
                append(_NULL)
        size += len(payload) + 100
        if size >= CHUNK_BYTES:
            yield b"".join(out)
            out.clear()
            size = 0
    append(_COPY_TRAILER)
    yield b"".join(out)


def _encode_tail(queue: str, state: JobState, consumer_id: str) -> bytes:
    name = _STATE_NAMES.get(state)
    if name is None:
        raise ValueError(f"a job in state {state!r} cannot be written: pass acked jobs in deletes")
    q = queue.encode()
    s = name.encode()  # an enum's binary form is its label
    parts = [_I32.pack(len(q)), q, _I32.pack(len(s)), s]
    if consumer_id:
        c = consumer_id.encode()
        parts += [_I32.pack(len(c)), c]
    else:
        parts.append(_NULL)
    return b"".join(parts)


async def write_batch(
    conn: psycopg.AsyncConnection,
    upserts: Sequence[Job],
    deletes: Sequence[int],
    applied_slot: int,
    *,
    statement_timeout_ms: int | None = None,
    configs: Sequence[queue_pb2.QueueConfig] | None = None,
    schedules: Sequence[queue_pb2.Schedule] | None = None,
) -> int:
    """Write one batch in one transaction; return ``dpq_cluster.applied_slot`` after it.

    The return value equals ``applied_slot`` when the batch is in PostgreSQL
    (written now or by an earlier try), and is greater when a newer writer got
    there first; when it is not below ``applied_slot`` on entry, nothing of the
    batch is written (see the module's "stale writer"). ``conn`` must not be in
    a transaction: the batch commits before this returns. ``synchronous_commit``
    is left as the server has it (on by default). ``statement_timeout_ms``, when
    given, is the server's limit on each statement of this transaction (a big
    batch may need more than the session's default). ``configs``, when given, are
    every queue's settings as of ``applied_slot``: they replace ``queue_configs``;
    ``schedules``, when given, every schedule: they replace ``schedules``.
    """
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise ValueError("write_batch commits its own transaction: call it outside one")
    async with conn.transaction():
        async with conn.pipeline():  # one round trip
            if statement_timeout_ms is not None:
                await conn.execute(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
            locked = await conn.execute(QUERIES["lock_cluster"])
            top = await conn.execute(QUERIES["max_job_id"])
            if upserts:
                await conn.execute(QUERIES["create_stage"])  # a no-op after the first batch
        row = await locked.fetchone()
        if row is None:
            raise RuntimeError("dpq_cluster has no row: run dpq.pg.migrate first")
        stored = row[0]
        if stored >= applied_slot:
            return stored
        (max_id,) = await top.fetchone()  # type: ignore[misc]
        fresh = [job for job in upserts if job.job_id > max_id]
        known = [job for job in upserts if job.job_id <= max_id]
        cur = conn.cursor()
        if fresh:
            async with cur.copy(QUERIES["copy_jobs"]) as copy:
                for chunk in copy_chunks(fresh, applied_slot):
                    await copy.write(chunk)
        if known:
            async with cur.copy(QUERIES["copy_stage"]) as copy:
                for chunk in copy_chunks(known, applied_slot):
                    await copy.write(chunk)
        async with conn.pipeline():  # one round trip, then COMMIT
            if known:
                await cur.execute(QUERIES["upsert_from_stage"])
            if deletes:
                await cur.execute(QUERIES["delete_jobs"], (list(deletes),))
            if configs is not None:
                await cur.execute(QUERIES["clear_queue_configs"])
                for c in configs:
                    weights = {w.key: w.weight for w in c.fairness_weights}
                    await cur.execute(QUERIES["insert_queue_config"], (
                        c.queue, c.max_in_flight, c.max_rate_per_s, c.burst, Jsonb(weights),
                        c.default_fairness_weight, c.max_attempts, c.slot))
            if schedules is not None:
                await cur.execute(QUERIES["clear_schedules"])
                for sc in schedules:
                    await cur.execute(QUERIES["insert_schedule"], (
                        sc.name, sc.queue, sc.priority, sc.payload, sc.cron, sc.every_ms,
                        sc.start_at, sc.jitter_ms, sc.fairness_key, sc.created_at_us,
                        sc.version, applied_slot))
            await cur.execute(QUERIES["advance_applied_slot"], {"slot": applied_slot})
    return applied_slot


async def applied_slot(conn: psycopg.AsyncConnection) -> int:
    """The last slot whose changes are all in PostgreSQL (0 before the first write)."""
    cur = await conn.execute(QUERIES["applied_slot"])
    row = await cur.fetchone()
    if row is None:
        raise RuntimeError("dpq_cluster has no row: run dpq.pg.migrate first")
    return row[0]


class _MicrosLoader(Loader):
    """Binary timestamptz -> microseconds since the Unix epoch, exactly."""

    format = pq.Format.BINARY

    def load(self, data: Any) -> int:
        return int.from_bytes(data, "big", signed=True) + PG_EPOCH_US


async def load_jobs(conn: psycopg.AsyncConnection) -> list[Job]:
    """Every job in the table, by job id, as the state machine's :class:`Job`.

    NULL times and consumer become 0 and "", as the state machine has them.
    For tests, tools and rebuilding a state machine; reads the whole table.
    """
    cur = conn.cursor(binary=True)
    cur.adapters.register_loader("timestamptz", _MicrosLoader)
    await cur.execute(QUERIES["load_jobs"])
    return [
        Job(
            job_id,
            queue,
            priority,
            payload,
            created or 0,
            ready or 0,
            owner or 0,
            attempt,
            _STATES[state],
            lease or 0,
            consumer or "",
            last_error=last_error or "",
            fairness_key=fairness_key or "",
        )
        for (job_id, queue, priority, payload, created, ready, owner, attempt, state, lease,
             consumer, last_error, fairness_key) in await cur.fetchall()
    ]
