"""Children (of dpq-node, dpq up, the bench) that stop when their starter dies, however it dies.

Why this exists: ``dpq up`` (and every :class:`dpq.cli.localcluster.LocalCluster`)
starts nodes and a gateway in sessions of their own (so a Ctrl-C in the
terminal reaches ``dpq up`` alone, which then stops them in order), and an
embedded PostgreSQL whose postmaster ``pg_ctl`` daemonises: its parent is
init, not us. A ``dpq up`` that was SIGKILLed, or whose terminal closed, used
to leave all of them running, holding the ports and the data folder, and the
next ``dpq up`` bound the same ports beside them. Signals that can be caught
(SIGINT, SIGTERM, SIGHUP) are handled by ``dpq up`` itself; for the ones that
cannot, two mechanisms, both needed:

* :func:`child_env` tells each child (in its environment) to ask the kernel
  for SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``), which the
  child does first thing (:func:`adopt`, in ``python -m dpq.node`` and
  ``python -m dpq.gateway``; it holds across ``start_new_session``, and a parent
  already gone by then is noticed by its pid). It covers direct children only,
  and fires when the *thread* that forked them ends, so it is asked only of
  children started from the main thread. Not between fork and exec: a
  ``preexec_fn`` makes ``subprocess`` fork() instead of vfork(), which runs
  gRPC's fork handlers in the child; grpcio 1.85 restarts its poller thread
  there, ``close_fds`` then closes the epoll fd under it, and the child aborts
  before exec ("epoll_wait error: Bad file descriptor", grpc/grpc#43055; seen
  in CI from a test process that had used gRPC).
* :class:`Lifeline` starts a watchdog (``python -m dpq.lifeline``) that holds
  the read end of a pipe whose write end only the owner holds. The kernel
  closes that end when the owner dies, so the watchdog reads EOF, SIGTERMs the
  processes it was told about (SIGKILL after a grace), then stops the embedded
  PostgreSQL of the folders it was told about if no live process still uses
  it. An owner that stops cleanly writes ``done`` first and the watchdog just
  exits. The watchdog runs in its own session and ignores SIGINT and SIGHUP,
  so the terminal that kills the owner does not kill it too.

The pipe speaks lines: ``pid <pid> <create time>`` (a process to stop; the
create time guards against a recycled pid), ``pg <data folder>`` and ``done``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

PR_SET_PDEATHSIG = 1
#: How long the watchdog lets processes stop after SIGTERM before SIGKILL.
GRACE_S = 10.0

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with(parent: int) -> None:
    """In the child: SIGTERM when the parent dies (or has died already)."""
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


#: In a child's environment: the pid of the parent it must die with, and its CPUs ("0,1").
PARENT_ENV = "DPQ_DIE_WITH_PARENT"
CPUS_ENV = "DPQ_CPUS"


def popen_kwargs() -> dict[str, Any]:
    """``subprocess.Popen`` arguments for a child of its own session (Ctrl-C in a
    terminal reaches the owner, not it); with :func:`child_env` in its environment."""
    return {"start_new_session": True}


def child_env(cpus: set[int] | None = None) -> dict[str, str]:
    """Environment entries for a child that dies with this process (when started
    from the main thread) and runs on ``cpus`` if given; the child calls :func:`adopt`."""
    env = {}
    if _libc is not None and threading.current_thread() is threading.main_thread():
        env[PARENT_ENV] = str(os.getpid())
    if cpus:
        env[CPUS_ENV] = ",".join(str(c) for c in sorted(cpus))
    return env


def adopt() -> None:
    """In a child started with :func:`child_env`: take its CPUs and die with its parent."""
    cpus = os.environ.pop(CPUS_ENV, "")
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    parent = os.environ.pop(PARENT_ENV, "")
    if parent:
        _die_with(int(parent))


class Lifeline:
    """The owner's side: a watchdog process and the pipe that ties it to us."""

    def __init__(self, log: Path | None = None) -> None:
        read, self._write = os.pipe()  # both non-inheritable; pass_fds hands on one
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        try:
            with open(log if log is not None else os.devnull, "ab") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "dpq.lifeline", str(read)], pass_fds=(read,),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                    # `-m` puts the working directory first on sys.path: not a
                    # source checkout (its uncompiled dpq would shadow this one)
                    cwd="/",
                    start_new_session=True)
        finally:
            os.close(read)
        self._lock = threading.Lock()

    def _say(self, line: str) -> None:
        with self._lock:
            if self._write >= 0:
                os.write(self._write, (line + "\n").encode())

    def watch(self, pid: int) -> None:
        """Stop process ``pid`` if the owner dies."""
        try:
            created = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            return
        self._say(f"pid {pid} {created!r}")

    def watch_postgres(self, data_dir: str | os.PathLike[str]) -> None:
        """Stop the embedded PostgreSQL of ``data_dir`` if the owner dies (say it before
        starting the server, so an owner killed while it starts is covered too)."""
        self._say(f"pg {Path(data_dir).resolve()}")

    def close(self) -> None:
        """The owner stopped everything itself: the watchdog exits and does nothing."""
        with self._lock:
            if self._write < 0:
                return
            try:
                os.write(self._write, b"done\n")
            finally:
                os.close(self._write)
                self._write = -1
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ----------------------------------------------------------------- the watchdog

def _stop_processes(watched: list[tuple[int, float]]) -> None:
    procs = []
    for pid, created in watched:
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.01:
                proc.terminate()
                procs.append(proc)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=GRACE_S)


def watchdog(fd: int) -> int:
    """Read the owner's lines until EOF; then stop what it left, unless it said ``done``."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    watched: list[tuple[int, float]] = []
    folders: list[str] = []
    buffer = b""
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            chunk = pipe.read(4096)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                kind, _, rest = line.decode().partition(" ")
                if kind == "done":
                    return 0
                if kind == "pid":
                    pid, created = rest.split()
                    watched.append((int(pid), float(created)))
                elif kind == "pg":
                    folders.append(rest)
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} the owner died: stopping "
          f"{len(watched)} processes and {len(folders)} PostgreSQL servers", flush=True)
    _stop_processes(watched)
    if folders:
        from dpq.pg import embedded

        for folder in folders:
            embedded.stop_orphaned(folder)
    return 0


if __name__ == "__main__":
    sys.exit(watchdog(int(sys.argv[1])))
