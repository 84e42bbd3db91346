"""The PostgreSQL ceiling: raw binary COPY of the benchmark's rows, on the same server.

The rows are the ones dpq's writer sends for newly enqueued jobs (every column
of ``jobs``, encoded by :func:`dpq.pg.writer.copy_chunks`: 100-B payloads,
priorities 1..5 from the same seed), encoded before the clock starts and
streamed in the writer's ~64 KiB pieces, one transaction per batch, with the
server's own durability settings (fsync, ``synchronous_commit``); three rounds,
shuffled, the median. Two tables:

- ``plain``: the jobs' columns and nothing else (``LIKE jobs``: no primary
  key, no index, no check): what the disk and COPY itself allow;
- ``indexed``: ``LIKE jobs INCLUDING ALL``: the primary key, the ready index
  and the checks the writer's inserts also pay for.

The writer does more per batch (a lock, ``max(job_id)``, the slot update) and
gets its rows from the replicated log: it can only come in under these.
"""

from __future__ import annotations

import random
import statistics
import time

import psycopg

from dpq.pg.queries import QUERIES
from dpq.pg.writer import copy_chunks
from dpq.queue.state import Job

TABLES = {
    "plain": "CREATE TABLE {name} (LIKE jobs)",
    "indexed": "CREATE TABLE {name} (LIKE jobs INCLUDING ALL)",
}


def copy_into(name: str) -> str:
    """The writer's own COPY (its column list, which ``copy_chunks`` encodes), into ``name``."""
    statement = QUERIES["copy_jobs"]
    if not statement.startswith("COPY jobs ("):
        raise RuntimeError("the writer's copy_jobs no longer starts with 'COPY jobs ('")
    return statement.replace("COPY jobs", f"COPY {name}", 1)


def make_jobs(n: int, payload_bytes: int, seed: int) -> list[Job]:
    rng = random.Random(seed)
    now_us = time.time_ns() // 1000
    filler = rng.randbytes(payload_bytes)
    return [Job(i, "default", rng.randint(1, 5), filler, now_us + i, now_us + i, 1 + i % 3)
            for i in range(1, n + 1)]


def rows_for(jobs: int, size: int) -> int:
    """Rows per measurement: the run's jobs (at most 100,000), and ten batches at least."""
    return max(10 * size, min(jobs, 100_000))


def _once(conn: psycopg.Connection, kind: str, batches: list[list[bytes]]) -> float:
    name = f"dpq_bench_copy_{kind}"
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(TABLES[kind].format(name=name))
    copy_sql = copy_into(name)
    t0 = time.perf_counter()
    for chunks in batches:
        with conn.transaction(), conn.cursor().copy(copy_sql) as copy:
            for chunk in chunks:
                copy.write(chunk)
    elapsed = time.perf_counter() - t0
    conn.execute(f"DROP TABLE {name}")
    return elapsed


def measure(dsn: str, jobs: int, batch_sizes: list[int], payload_bytes: int, seed: int,
            rounds: int = 3) -> dict[str, dict[str, dict[str, object]]]:
    """``{"plain": {"1000": {"rows_per_s": median, "rounds": [...], "rows": n}, ...},
    "indexed": ...}``.

    Each (table, batch size) is measured ``rounds`` times, the variants in a
    shuffled order each round, so a noisy neighbour hurts them alike; the
    median is reported. The migrated ``jobs`` table must exist (its columns
    are copied).
    """
    rng = random.Random(seed)
    encoded: dict[int, tuple[int, list[list[bytes]]]] = {}
    for size in batch_sizes:
        n = rows_for(jobs, size)
        rows = make_jobs(n, payload_bytes, seed)
        encoded[size] = (n, [list(copy_chunks(rows[i:i + size], 1)) for i in range(0, n, size)])
    rates: dict[tuple[str, int], list[float]] = {(k, s): [] for k in TABLES for s in batch_sizes}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(rounds):
            order = list(rates)
            rng.shuffle(order)
            for kind, size in order:
                n, batches = encoded[size]
                rates[kind, size].append(n / _once(conn, kind, batches))
    return {kind: {str(size): {"rows_per_s": statistics.median(rates[kind, size]),
                               "rounds": rates[kind, size], "rows": encoded[size][0]}
                   for size in batch_sizes} for kind in TABLES}
