"""Schema migrations, applied on node start.

The migrations are the ``.sql`` files of ``dpq/pg/sql/migrations/``, shipped
inside the package so an installed wheel finds them; they are applied in name
order (``0001_init.sql``, ``0002_….sql``, …), each in its own transaction
together with its row in ``dpq_migrations``. Every node of a cluster runs
:func:`migrate` when it starts and finds PostgreSQL up; the leader's writer
runs it (:func:`migrate_on`) before its first write too, so a cluster started
while PostgreSQL is down gets its schema once the server is back. A session
advisory lock makes them take turns, so the second one finds everything
applied and does nothing.

``db/schema.sql`` is the resulting schema, for reading; a test checks that the
migrations produce exactly it.

A migration is never edited once released: the SHA-256 of each applied file is
recorded, and :func:`migrate` refuses to run against a database where an
applied migration differs from the file of the same name. A database that has
migrations this version does not know (a newer dpq migrated it) is left alone;
they are reported in the log.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

#: Key of the session advisory lock held while migrating (b"dpqmigr" as a number).
LOCK_KEY = int.from_bytes(b"dpqmigr", "big")

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS dpq_migrations (
    name       TEXT PRIMARY KEY,
    sha256     TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The database's migrations do not match this version's files."""


@dataclass(frozen=True)
class Migration:
    name: str  # the file name, e.g. "0001_init.sql"
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """Every migration shipped with this version, in the order they apply."""
    folder = resources.files("dpq.pg").joinpath("sql", "migrations")
    found = [
        Migration(entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found, key=lambda m: m.name)


async def migrate(conninfo: str) -> list[str]:
    """Bring the database at ``conninfo`` up to date; return the names applied now.

    Safe to run from several processes at once and any number of times.
    """
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        return await migrate_on(conn)


async def migrate_on(conn: psycopg.AsyncConnection) -> list[str]:
    """:func:`migrate` on an open autocommit connection (the leader's writer uses its own)."""
    await conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        return await _migrate_locked(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


async def _migrate_locked(conn: psycopg.AsyncConnection) -> list[str]:
    await conn.execute(MIGRATIONS_TABLE)
    cur = await conn.execute("SELECT name, sha256 FROM dpq_migrations ORDER BY name")
    applied = dict(await cur.fetchall())
    known = migrations()
    for migration in known:
        recorded = applied.get(migration.name)
        if recorded is not None and recorded != migration.sha256:
            raise MigrationError(
                f"migration {migration.name} was applied with SHA-256 {recorded}, but the "
                f"file shipped with this dpq has {migration.sha256}: a released migration "
                "must never change; add a new migration instead"
            )
    unknown = sorted(set(applied) - {m.name for m in known})
    if unknown:
        log.warning(
            "the database has migrations this dpq does not know (a newer dpq applied "
            "them): %s", ", ".join(unknown)
        )
    done = []
    for migration in known:
        if migration.name in applied:
            continue
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO dpq_migrations (name, sha256) VALUES (%s, %s)",
                (migration.name, migration.sha256),
            )
        log.info("applied migration %s", migration.name)
        done.append(migration.name)
    return done
