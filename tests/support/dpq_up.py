"""``dpq up`` and the other commands as a user runs them, in real processes."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
from support.cluster import wait_until

from dpq.cli.localcluster import PACKAGE_ROOT

ENV = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
# Not the checkout: `python -m` puts the working directory first on sys.path,
# and the checkout's dpq/ has no compiled extensions when dpq is installed.
CWD = tempfile.gettempdir()


def dpq(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dpq.cli", *args], check=False, input=stdin,
                          text=True,
                          capture_output=True, env=ENV, timeout=timeout, cwd=CWD)


def program(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m dpq.node …`` (dpq-node) or ``dpq.gateway`` (dpq-gateway), to the end."""
    return subprocess.run([sys.executable, "-m", module, *args], check=False, text=True,
                          capture_output=True,
                          env=ENV, timeout=timeout, cwd=CWD)


def free_port_base(n: int = 4) -> int:
    """A base whose ports are free for `dpq up`: the gateway and node client ports
    (base .. base+n-1), the nodes' peer ports (base+11 .. base+10+n-1) and the
    metrics ports (base+2000 .. base+2000+n-1)."""
    for _ in range(100):
        base = random.randrange(20_000, 40_000)
        try:
            for port in [*range(base, base + n), *range(base + 11, base + 10 + n),
                         *range(base + 2000, base + 2000 + n)]:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError("no free range of ports")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Up:
    """`dpq up` in the background, its output collected line by line."""

    def __init__(self, data: Path, *args: str) -> None:
        self.data = data
        self.base = free_port_base()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dpq.cli", "up", "--data-dir", str(data),
             "--port-base", str(self.base), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV, cwd=CWD)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.base}"

    @property
    def ports(self) -> list[int]:
        """The gateway's, the nodes' client ports, the nodes' peer ports, the metrics ports."""
        return [*range(self.base, self.base + 4), *range(self.base + 11, self.base + 14),
                *range(self.base + 2000, self.base + 2004)]

    def wait_up(self) -> None:
        wait_until(lambda: any(line.startswith("dpq is up") for line in self.lines) or
                   self.proc.poll() is not None, 90, "dpq up to report the cluster up")
        assert self.proc.poll() is None, "\n".join(self.lines)

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)

    def descendants(self) -> list[psutil.Process]:
        """Every process dpq up started (nodes, gateway, watchdog), and PostgreSQL's postmaster."""
        procs = psutil.Process(self.proc.pid).children(recursive=True)
        pidfile = self.data / "postgres" / "postmaster.pid"
        if pidfile.exists():
            procs.append(psutil.Process(int(pidfile.read_text().split()[0])))
        return procs

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def node_pids(data: Path) -> dict[int, int]:
    pids = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "dpq.node" in cmd and any(str(data) in part for part in cmd):
            pids[int(cmd[cmd.index("--id") + 1])] = proc.info["pid"]
    return pids
