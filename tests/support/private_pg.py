"""A PostgreSQL server of the test's own, which it may stop, start again, freeze and thaw.

The embedded server (``dpq.pg.embedded``) in a folder only this test uses: this
process is its only holder, so :meth:`PrivatePostgres.stop` really stops it, and
:meth:`start` on the same folder brings it back with the same DSN (its Unix
socket lives in the folder). :meth:`freeze` sends SIGSTOP to the postmaster
and every child of it (a hung server: connections are accepted by the kernel
and never answered), :meth:`thaw` sends SIGCONT.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg

from dpq.pg import embedded


class PrivatePostgres:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._server: embedded.Embedded | None = None
        self.dsn = ""
        self.admin_dsn = ""
        self._frozen: list[psutil.Process] = []

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> str:
        if self._server is None:
            self._server = embedded.start(self.folder)
            self.dsn, self.admin_dsn = self._server.dsn, self._server.admin_dsn
        return self.dsn

    def stop(self) -> None:
        self.thaw()
        if self._server is not None:
            self._server.stop()
            self._server = None
        if (self.folder / "postmaster.pid").exists():
            raise AssertionError(f"the server in {self.folder} did not stop")

    def _processes(self) -> list[psutil.Process]:
        pid = int((self.folder / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        return [postmaster, *postmaster.children(recursive=True)]

    def freeze(self) -> None:
        """SIGSTOP the postmaster first (so it starts no one new), then its children."""
        for process in self._processes():
            process.send_signal(signal.SIGSTOP)
            self._frozen.append(process)

    def thaw(self) -> None:
        frozen, self._frozen = self._frozen, []
        for process in frozen:
            try:
                process.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                pass

    def job_ids(self) -> set[int]:
        """The ids in the jobs table (empty before the first migration)."""
        with psycopg.connect(self.dsn, connect_timeout=5) as conn:
            try:
                return {row[0] for row in conn.execute("SELECT job_id FROM jobs")}
            except psycopg.errors.UndefinedTable:
                return set()

    @classmethod
    @contextmanager
    def temporary(cls) -> Iterator[PrivatePostgres]:
        """One in a new temp folder (not pytest's: its server user must reach it),
        stopped and removed at the end."""
        folder = Path(tempfile.mkdtemp(prefix="dpq-pgo-"))
        server = cls(folder / "pg")
        try:
            yield server
        finally:
            server.stop()
            shutil.rmtree(folder, ignore_errors=True)
