"""The leader's PostgreSQL writer against raw COPY, on the same server.

    python bench/bench_pgwriter.py                   # an embedded server in a temp folder
    python bench/bench_pgwriter.py --dsn postgresql://...   # an existing server (makes a database)

(with dpq installed; in a checkout built in place, ``PYTHONPATH=. python bench/…``).

Plain timing, not pyperf: every figure needs a live server and a table in a
known state, so each round resets the tables, and the variants run
interleaved, in a shuffled order each round, so a noisy neighbour hurts them
alike. Printed: the median rows/s over the rounds for each batch size, and
how many times faster raw pre-encoded COPY was in the same rounds.

Workloads (100-byte payloads, one transaction per batch, fsync and
synchronous_commit on):

* raw COPY — binary COPY into a table of the seed's four columns, with
  psycopg's ``write_row`` (as DESIGN.md's figure) and pre-encoded, streamed in
  ~64 KiB pieces (as the writer does): the reference;
* writer, new — ``write_batch`` of jobs never written (the enqueue path: plain
  COPY into ``jobs``);
* writer, new via upsert — the same jobs forced through the staging table and
  ``INSERT … ON CONFLICT`` (a row with a huge id makes every job "maybe
  written"), to show what the plain-COPY path buys;
* writer, update+delete — half the batch leased (rows updated), half acked
  (rows deleted), in a table holding the batch's jobs and as many others;
* writer, steady mix — a third new, a third updated, a third deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from dpq.pg import embedded
from dpq.pg.migrate import migrate
from dpq.pg.writer import PG_EPOCH_US, write_batch
from dpq.queue.state import Job, JobState

NOW_US = 1_764_000_000_000_000
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
ONE_US = datetime.timedelta(microseconds=1)
BATCHES_PER_ROUND = 3

RAW_TABLE = """
DROP TABLE IF EXISTS raw_jobs;
CREATE TABLE raw_jobs (
    job_id     BIGINT PRIMARY KEY,
    priority   INT CHECK (priority BETWEEN 1 AND 5),
    payload    BYTEA,
    created_at TIMESTAMPTZ DEFAULT now()
);
"""
RAW_COPY = "COPY raw_jobs (job_id, priority, payload, created_at) FROM STDIN (FORMAT BINARY)"
RESET = "TRUNCATE jobs, raw_jobs; UPDATE dpq_cluster SET applied_slot = 0"


def new_jobs(first_id: int, n: int, rng: random.Random) -> list[Job]:
    return [
        Job(i, "default", 1 + i % 5, rng.randbytes(100), NOW_US + i, NOW_US + i, 1 + i % 3)
        for i in range(first_id, first_id + n)
    ]


def leased(job: Job) -> Job:
    return Job(job.job_id, job.queue, job.priority, job.payload, job.created_at_us,
               job.ready_at_us, job.owner, 1, JobState.LEASED, NOW_US + 30_000_000, "consumer-1")


def raw_chunks(jobs: list[Job]):
    """The seed's four columns as binary COPY, in ~64 KiB pieces (as the writer sends)."""
    import struct

    row = struct.Struct(">hiqiii").pack
    tail = struct.Struct(">iq").pack
    out = [b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)]
    size = 0
    for j in jobs:
        out += (row(4, 8, j.job_id, 4, j.priority, len(j.payload)), j.payload,
                tail(8, j.created_at_us - PG_EPOCH_US))
        size += len(j.payload) + 30
        if size >= 64 * 1024:
            yield b"".join(out)
            out, size = [], 0
    out.append(b"\xff\xff")
    yield b"".join(out)


async def raw_write_row(conn, jobs, slot):
    async with conn.transaction(), conn.cursor().copy(RAW_COPY) as copy:
        copy.set_types(["int8", "int4", "bytea", "timestamptz"])
        for j in jobs:
            await copy.write_row((j.job_id, j.priority, j.payload,
                                  EPOCH + j.created_at_us * ONE_US))


async def raw_buffered(conn, jobs, slot):
    async with conn.transaction(), conn.cursor().copy(RAW_COPY) as copy:
        for chunk in raw_chunks(jobs):
            await copy.write(chunk)


async def measure(conn, n: int, workload: str, rng: random.Random) -> float:
    """Seconds for BATCHES_PER_ROUND batches of n rows of ``workload``, from a reset table."""
    await conn.execute(RESET)
    if workload == "new via upsert":
        await write_batch(conn, new_jobs(10**12, 1, rng), [], 1)
    batches = []
    slot = 1
    for b in range(BATCHES_PER_ROUND):
        base = 1 + b * 3 * n
        if workload in ("raw write_row", "raw pre-encoded", "new", "new via upsert"):
            batches.append((new_jobs(base, n, rng), []))
        elif workload == "update+delete":
            old = new_jobs(base, 2 * n, rng)
            slot += 1
            await write_batch(conn, old, [], slot)
            half = n // 2
            batches.append(([leased(j) for j in old[:half]], [j.job_id for j in old[half:n]]))
        elif workload == "steady mix":
            old = new_jobs(base, 2 * n, rng)
            slot += 1
            await write_batch(conn, old, [], slot)
            third = n // 3
            ups = [leased(j) for j in old[:third]] + new_jobs(base + 2 * n, n - 2 * third, rng)
            batches.append((ups, [j.job_id for j in old[third:2 * third]]))
        else:
            raise ValueError(workload)
    fn = {"raw write_row": raw_write_row, "raw pre-encoded": raw_buffered}.get(workload)
    elapsed = 0.0
    for ups, dels in batches:
        slot += 1
        t0 = time.perf_counter()
        if fn is not None:
            await fn(conn, ups, slot)
        else:
            await write_batch(conn, ups, dels, slot)
        elapsed += time.perf_counter() - t0
    return elapsed


WORKLOADS = ["raw write_row", "raw pre-encoded", "new", "new via upsert", "update+delete",
             "steady mix"]


async def run(dsn: str, sizes: list[int], rounds: int) -> None:
    await migrate(dsn)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(RAW_TABLE)
        info = await (await conn.execute(
            "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit')"
        )).fetchone()
        print(f"# {info[0].split(' on ')[0]}, fsync={info[1]}, synchronous_commit={info[2]}, "
              f"{os.cpu_count()} CPUs, {rounds} rounds x {BATCHES_PER_ROUND} batches")
        rng = random.Random(42)
        for n in sizes:
            rates: dict[str, list[float]] = {w: [] for w in WORKLOADS}
            await measure(conn, n, "new", rng)  # warm-up
            for _ in range(rounds):
                order = list(WORKLOADS)
                rng.shuffle(order)  # no workload always follows the same one
                for w in order:
                    rates[w].append(BATCHES_PER_ROUND * n / await measure(conn, n, w, rng))
            raw = statistics.median(rates["raw pre-encoded"])
            print(f"\nbatch of {n:,} rows        median rows/s   raw pre-encoded / this   min..max")
            for w in WORKLOADS:
                med = statistics.median(rates[w])
                print(f"  {w:24s} {med:12,.0f}   {raw / med:10.2f}x            "
                      f"{min(rates[w]):,.0f}..{max(rates[w]):,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="an existing server (a database dpq_bench is created)")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.dsn:
        with psycopg.connect(args.dsn, autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS dpq_bench")
            c.execute("CREATE DATABASE dpq_bench")
        dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname="dpq_bench")
        asyncio.run(run(dsn, sizes, args.rounds))
        return
    with tempfile.TemporaryDirectory(prefix="dpq-bench-") as tmp:
        pg = embedded.start(Path(tmp) / "pg", database="dpq_bench")
        try:
            asyncio.run(run(pg.dsn, sizes, args.rounds))
        finally:
            pg.stop()


if __name__ == "__main__":
    main()
