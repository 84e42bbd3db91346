"""The leader's batched writer against a real PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import asyncio
import datetime
import functools
import random

import psycopg
import pytest

from dpq.pg.queries import QUERIES
from dpq.pg.writer import CHUNK_BYTES, applied_slot, load_jobs, write_batch
from dpq.queue.state import Job, JobState

T0 = 1_764_000_000_123_457  # µs since the Unix epoch: 2025-11-24 16:00:00.123457 UTC
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def run_async(test):
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


def ready(job_id: int, priority: int = 3, queue: str = "default", at: int = T0, delay: int = 0,
          owner: int = 1, payload: bytes | None = None) -> Job:
    return Job(job_id, queue, priority, payload if payload is not None else b"job-%d" % job_id,
               at, at + delay, owner)


def leased(job: Job, attempt: int = 1, until: int = T0 + 30_000_000, consumer: str = "c-1") -> Job:
    return Job(job.job_id, job.queue, job.priority, job.payload, job.created_at_us,
               job.ready_at_us, job.owner, attempt, JobState.LEASED, until, consumer)


async def connect(dsn: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


async def slots_of(conn: psycopg.AsyncConnection) -> dict[int, int]:
    cur = await conn.execute("SELECT job_id, updated_slot FROM jobs")
    return dict(await cur.fetchall())


@run_async
async def test_new_rows_are_written_with_the_applied_slot(pg_db):
    jobs = [ready(i, priority=1 + i % 5, queue=f"q{i % 2}") for i in range(1, 11)]
    async with await connect(pg_db) as conn:
        assert await applied_slot(conn) == 0
        assert await write_batch(conn, jobs, [], 7) == 7
        assert await load_jobs(conn) == jobs
        assert await applied_slot(conn) == 7
        assert set((await slots_of(conn)).values()) == {7}


@run_async
async def test_updates_and_deletes_in_one_batch(pg_db):
    a, b, c = ready(1), ready(2), ready(3)
    async with await connect(pg_db) as conn:
        await write_batch(conn, [a, b, c], [], 5)
        a2 = leased(a)
        d = ready(4)  # new in the same batch as the update and the delete
        assert await write_batch(conn, [a2, d], [b.job_id], 9) == 9
        assert await load_jobs(conn) == [a2, c, d]
        assert await slots_of(conn) == {1: 9, 3: 5, 4: 9}
        assert await applied_slot(conn) == 9
        # a job back to ready after a nack: the lease and consumer are cleared
        a3 = Job(1, a.queue, a.priority, a.payload, a.created_at_us, T0 + 60_000_000, a.owner, 1)
        await write_batch(conn, [a3], [], 12)
        cur = await conn.execute(
            "SELECT state::text, attempts, lease_expires_at, consumer_id FROM jobs WHERE job_id = 1"
        )
        assert await cur.fetchone() == ("ready", 1, None, None)
        assert (await load_jobs(conn))[0] == a3


@run_async
async def test_new_and_known_rows_take_either_path_to_the_same_result(pg_db):
    """A seeded model run: ids above max(job_id) are COPYed, the rest upserted."""
    rng = random.Random(20241227)
    model: dict[int, Job] = {}
    next_id, slot = 1, 0
    async with await connect(pg_db) as conn:
        for _ in range(25):
            slot += rng.randint(1, 3)
            upserts, deletes = [], []
            for job_id in sorted(model):
                roll = rng.random()
                if roll < 0.2:
                    deletes.append(job_id)
                    del model[job_id]
                elif roll < 0.4:
                    model[job_id] = leased(model[job_id], attempt=model[job_id].attempt + 1,
                                           until=T0 + rng.randint(1, 10**9), consumer=f"c{slot}")
                    upserts.append(model[job_id])
            for _ in range(rng.randint(0, 40)):
                job = ready(next_id, priority=rng.randint(1, 5), queue=rng.choice("abc"),
                            at=T0 + rng.randint(0, 10**9), delay=rng.choice([0, 5_000_000]),
                            owner=rng.randint(1, 3), payload=rng.randbytes(rng.randint(0, 200)))
                model[next_id] = job
                upserts.append(job)
                next_id += 1
            rng.shuffle(upserts)
            assert await write_batch(conn, upserts, deletes, slot) == slot
            assert await load_jobs(conn) == [model[i] for i in sorted(model)]
        assert await applied_slot(conn) == slot


@run_async
async def test_an_older_slot_does_not_overwrite_a_row(pg_db):
    """The per-row guard, behind the batch guard (which would refuse such a batch)."""
    newer = leased(ready(1), attempt=2)
    async with await connect(pg_db) as conn:
        await write_batch(conn, [newer], [], 10)
        await conn.execute("UPDATE dpq_cluster SET applied_slot = 0")  # only the row guard left
        await write_batch(conn, [ready(1), ready(2)], [], 6)
        assert await load_jobs(conn) == [newer, ready(2)]
        assert await slots_of(conn) == {1: 10, 2: 6}


@run_async
async def test_a_stale_writer_writes_nothing_and_cannot_move_applied_slot_back(pg_db):
    one, two = ready(1), ready(2)
    async with await connect(pg_db) as conn:
        await write_batch(conn, [one, two], [], 5)
        state_at_10 = [leased(one)]
        await write_batch(conn, state_at_10, [two.job_id], 10)  # job 2 acked at slot 10
        # A deposed leader still holds the batch for slot 8: job 1 ready, job 2
        # not yet acked, a job 3 enqueued. None of it may land.
        assert await write_batch(conn, [one, two, ready(3)], [], 8) == 10
        assert await load_jobs(conn) == state_at_10
        assert await applied_slot(conn) == 10
        # A retry of the batch that committed (its answer was lost) is a no-op too.
        assert await write_batch(conn, state_at_10, [two.job_id], 10) == 10
        assert await load_jobs(conn) == state_at_10
        assert await slots_of(conn) == {1: 10}


async def _lock_waiters(conn: psycopg.AsyncConnection, pid: int) -> bool:
    cur = await conn.execute(
        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
    )
    row = await cur.fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("other_slot, expect_written", [(20, False), (12, True)])
@run_async
async def test_writers_take_turns_on_the_cluster_row(pg_db, other_slot, expect_written):
    """A writer that waited for another one sees the slot that one committed."""
    async with await connect(pg_db) as other, await connect(pg_db) as conn:
        await write_batch(conn, [ready(1)], [], 5)
        async with other.transaction():
            await other.execute("SELECT applied_slot FROM dpq_cluster FOR UPDATE")
            await other.execute("UPDATE dpq_cluster SET applied_slot = %s", (other_slot,))
            task = asyncio.create_task(write_batch(conn, [leased(ready(1)), ready(2)], [], 15))
            while not await _lock_waiters(other, conn.info.backend_pid):
                assert not task.done()
        result = await task
        if expect_written:
            assert result == 15
            assert await load_jobs(conn) == [leased(ready(1)), ready(2)]
        else:
            assert result == other_slot
            assert await load_jobs(conn) == [ready(1)]
        assert await applied_slot(conn) == result


async def _fail_on_slot_update(conn: psycopg.AsyncConnection, body: str) -> None:
    await conn.execute(f"""
        CREATE FUNCTION fail_batch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN {body} RETURN NEW; END $$;
        CREATE TRIGGER fail_batch BEFORE UPDATE ON dpq_cluster
            FOR EACH ROW EXECUTE FUNCTION fail_batch();
    """)


def _batch_after_5() -> tuple[list[Job], list[int]]:
    return [leased(ready(1)), ready(4)], [2]


async def _assert_still_at_slot_5(dsn: str) -> None:
    async with await connect(dsn) as fresh:
        assert await load_jobs(fresh) == [ready(1), ready(2), ready(3)]
        assert await applied_slot(fresh) == 5


@run_async
async def test_a_failure_at_the_last_statement_leaves_nothing_of_the_batch(pg_db):
    async with await connect(pg_db) as conn:
        await write_batch(conn, [ready(1), ready(2), ready(3)], [], 5)
        await _fail_on_slot_update(conn, "RAISE EXCEPTION 'injected failure';")
        upserts, deletes = _batch_after_5()
        with pytest.raises(psycopg.errors.RaiseException, match="injected failure"):
            await write_batch(conn, upserts, deletes, 9)
        await _assert_still_at_slot_5(pg_db)
        # the same connection can write the batch again once the fault is gone
        await conn.execute("DROP TRIGGER fail_batch ON dpq_cluster")
        assert await write_batch(conn, upserts, deletes, 9) == 9
        assert await load_jobs(conn) == [leased(ready(1)), ready(3), ready(4)]


@run_async
async def test_a_connection_lost_mid_transaction_leaves_nothing_of_the_batch(pg_db):
    async with await connect(pg_db) as conn:
        await write_batch(conn, [ready(1), ready(2), ready(3)], [], 5)
        await _fail_on_slot_update(conn, "PERFORM pg_terminate_backend(pg_backend_pid());")
        upserts, deletes = _batch_after_5()
        with pytest.raises(psycopg.OperationalError):
            await write_batch(conn, upserts, deletes, 9)
        assert conn.closed
    await _assert_still_at_slot_5(pg_db)


@run_async
async def test_a_bad_row_after_good_ones_leaves_nothing_of_the_batch(pg_db):
    async with await connect(pg_db) as conn:
        await write_batch(conn, [ready(1), ready(2), ready(3)], [], 5)
        # job 4 is new (plain COPY, done first), job 1's update is refused
        bad = leased(ready(1, priority=6))
        with pytest.raises(psycopg.errors.CheckViolation, match="priority_in_range"):
            await write_batch(conn, [ready(4), bad], [2], 9)
    await _assert_still_at_slot_5(pg_db)


@pytest.mark.parametrize("priority", [0, 6])
@pytest.mark.parametrize("path", ["copy", "upsert"])
@run_async
async def test_the_check_refuses_priorities_outside_1_to_5(pg_db, priority, path):
    async with await connect(pg_db) as conn:
        if path == "upsert":  # a higher id already written sends job 1 through the upsert
            await write_batch(conn, [ready(2)], [], 1)
        with pytest.raises(psycopg.errors.CheckViolation) as refused:
            await write_batch(conn, [ready(1, priority=priority)], [], 3)
        assert refused.value.diag.constraint_name == "priority_in_range"
        assert await applied_slot(conn) == (1 if path == "upsert" else 0)


@run_async
async def test_times_round_trip_exactly_and_mean_what_they_say(pg_db):
    times = [0, 1, 999_999, T0, T0 + 1,
             4_102_444_800_000_000 - 1]  # … up to 2099-12-31T23:59:59.999999
    jobs = [
        Job(i + 1, "default", 1, b"", us, us + 7, 1, 1, JobState.LEASED, us + 13, "c")
        for i, us in enumerate(times)
    ]
    async with await connect(pg_db) as conn:
        await write_batch(conn, jobs, [], 1)
        assert await load_jobs(conn) == jobs
        cur = await conn.execute(
            "SELECT created_at, deliver_after, lease_expires_at FROM jobs ORDER BY job_id"
        )
        as_datetimes = await cur.fetchall()
        cur = await conn.execute(
            "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') "
            "FROM jobs WHERE job_id = 4"
        )
        assert (await cur.fetchone())[0] == "2025-11-24 16:00:00.123457"
    us = datetime.timedelta(microseconds=1)
    assert as_datetimes == [(EPOCH + t * us, EPOCH + (t + 7) * us, EPOCH + (t + 13) * us)
                            for t in times]


@run_async
async def test_no_lease_and_no_consumer_are_stored_as_null(pg_db):
    jobs = [ready(1, delay=5_000_000), Job(2, "q", 2, b"\x00\xff", T0, T0, 2, 3, JobState.DEAD)]
    async with await connect(pg_db) as conn:
        await write_batch(conn, jobs, [], 1)
        cur = await conn.execute(
            "SELECT state::text, attempts, owner_node, deliver_after - created_at, "
            "lease_expires_at, consumer_id FROM jobs ORDER BY job_id"
        )
        assert await cur.fetchall() == [
            ("ready", 0, 1, datetime.timedelta(seconds=5), None, None),
            ("dead", 3, 2, datetime.timedelta(0), None, None),
        ]
        assert await load_jobs(conn) == jobs


@run_async
async def test_batches_larger_than_one_copy_chunk(pg_db):
    rng = random.Random(7)
    many = [ready(i, payload=rng.randbytes(300)) for i in range(1, 1001)]
    big = ready(1001, payload=rng.randbytes(1 << 20))  # the default payload limit
    assert sum(len(j.payload) for j in many) > 3 * CHUNK_BYTES
    async with await connect(pg_db) as conn:
        await write_batch(conn, many[:500], [], 1)  # then 500 upserted and 500 + 1 copied
        changed = [leased(j) for j in many[:500]] + many[500:] + [big]
        await write_batch(conn, changed, [], 2)
        assert await load_jobs(conn) == changed


@run_async
async def test_text_is_utf8_and_payload_bytes_pass_through(pg_db):
    payload = bytes(range(256)) * 4
    job = leased(ready(1, queue="q.ü:1", payload=payload), consumer="consumer-é-1")
    async with await connect(pg_db) as conn:
        await write_batch(conn, [job], [], 1)
        assert await load_jobs(conn) == [job]


@run_async
async def test_write_batch_commits_its_own_transaction(pg_db):
    async with await psycopg.AsyncConnection.connect(pg_db) as conn:  # not autocommit
        await conn.execute("SELECT 1")  # opens a transaction
        with pytest.raises(ValueError, match="outside"):
            await write_batch(conn, [ready(1)], [], 1)
        await conn.rollback()
        assert await write_batch(conn, [ready(1)], [], 1) == 1
    async with await connect(pg_db) as other:
        assert await load_jobs(other) == [ready(1)]


@run_async
async def test_operators_list_ready_jobs_most_urgent_and_oldest_first(pg_db):
    jobs = [ready(1, priority=3, at=T0), ready(2, priority=1, at=T0 + 5),
            ready(3, priority=1, at=T0),
            leased(ready(4, priority=1)), ready(5, priority=1, queue="other")]
    async with await connect(pg_db) as conn:
        await write_batch(conn, jobs, [], 1)
        cur = await conn.execute(QUERIES["list_ready_jobs"], {"queue": "default", "limit": 10})
        assert [row[0] for row in await cur.fetchall()] == [3, 2, 1]
        await conn.execute("SET enable_seqscan = off")
        cur = await conn.execute("EXPLAIN " + QUERIES["list_ready_jobs"],
                                 {"queue": "default", "limit": 10})
        assert "jobs_ready_idx" in "\n".join(row[0] for row in await cur.fetchall())


@run_async
async def test_a_dead_job_keeps_its_last_error_on_either_path(pg_db):
    fresh = ready(1)
    fresh.state, fresh.attempt, fresh.last_error = JobState.DEAD, 3, "ValueError: row 7 ✗"
    plain = ready(2)
    async with await connect(pg_db) as conn:
        await write_batch(conn, [fresh, plain], [], 5)  # new rows: COPY straight in
        known = ready(2)
        known.last_error = "lease expired"
        await write_batch(conn, [known], [], 6)  # a known row: staged and merged
        assert await load_jobs(conn) == [fresh, known]
        cur = await conn.execute("SELECT job_id, last_error FROM jobs ORDER BY job_id")
        assert await cur.fetchall() == [(1, "ValueError: row 7 ✗"), (2, "lease expired")]


@run_async
async def test_fairness_keys_are_written_on_either_path_and_null_without_one(pg_db):
    tenant = ready(1)
    tenant.fairness_key = "acme ✓"
    plain = ready(2)
    async with await connect(pg_db) as conn:
        await write_batch(conn, [tenant, plain], [], 5)
        moved = ready(2)
        moved.fairness_key = "globex"
        await write_batch(conn, [moved], [], 6)
        assert await load_jobs(conn) == [tenant, moved]
        cur = await conn.execute("SELECT job_id, fairness_key FROM jobs ORDER BY job_id")
        assert await cur.fetchall() == [(1, "acme ✓"), (2, "globex")]
        await write_batch(conn, [ready(3)], [], 7)
        cur = await conn.execute("SELECT fairness_key FROM jobs WHERE job_id = 3")
        assert await cur.fetchone() == (None,)


@run_async
async def test_queue_configs_are_replaced_whole_with_the_batch(pg_db):
    from dpq.v1 import queue_pb2

    mail = queue_pb2.QueueConfig(
        queue="mail", max_in_flight=50, max_rate_per_s=200.0, burst=20, max_attempts=4,
        fairness_weights=[queue_pb2.FairnessWeight(key="acme", weight=3)], slot=4)
    reports = queue_pb2.QueueConfig(queue="reports", default_fairness_weight=2, slot=5)
    async with await connect(pg_db) as conn:
        await write_batch(conn, [], [], 5, configs=[mail, reports])
        cur = await conn.execute(QUERIES["load_queue_configs"])
        assert await cur.fetchall() == [
            ("mail", 50, 200.0, 20, {"acme": 3}, 0, 4, 4), ("reports", 0, 0.0, 0, {}, 2, 0, 5)]
        await write_batch(conn, [ready(1)], [], 6)  # no configs given: left as they are
        cur = await conn.execute("SELECT count(*) FROM queue_configs")
        assert await cur.fetchone() == (2,)
        await write_batch(conn, [], [], 7, configs=[reports])  # mail's settings were cleared
        cur = await conn.execute("SELECT queue FROM queue_configs")
        assert await cur.fetchall() == [("reports",)]
        await write_batch(conn, [], [], 7, configs=[])  # a stale slot: nothing written
        cur = await conn.execute("SELECT queue FROM queue_configs")
        assert await cur.fetchall() == [("reports",)]


@run_async
async def test_schedules_are_replaced_whole_with_the_batch(pg_db):
    from dpq.v1 import queue_pb2

    every = queue_pb2.Schedule(name="heartbeat", queue="ops", priority=2, payload=b"\x00beat",
                               every_ms=1000, start_at=T0, jitter_ms=50, created_at_us=T0,
                               version=3)
    cron = queue_pb2.Schedule(name="nightly", queue="reports", priority=5, payload=b"",
                              cron="0 3 * * *", start_at=T0 + 1, fairness_key="acme",
                              created_at_us=T0 + 2, version=4)
    async with await connect(pg_db) as conn:
        await write_batch(conn, [], [], 5, schedules=[every, cron])
        cur = await conn.execute(QUERIES["load_schedules"])
        rows = await cur.fetchall()
        at = EPOCH + datetime.timedelta(microseconds=T0)
        assert rows == [
            ("heartbeat", "ops", 2, b"\x00beat", None, 1000, at, 50, None, at, 3, 5),
            ("nightly", "reports", 5, b"", "0 3 * * *", None,
             at + datetime.timedelta(microseconds=1), 0, "acme",
             at + datetime.timedelta(microseconds=2), 4, 5)]
        await write_batch(conn, [], [], 6, schedules=[cron])  # heartbeat was deleted
        cur = await conn.execute("SELECT name FROM schedules")
        assert await cur.fetchall() == [("nightly",)]
