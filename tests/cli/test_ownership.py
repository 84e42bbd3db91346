"""`dpq up` owns its ports and what it starts (issue 10).

Exclusive ports: a second `dpq up`, `dpq-node` or `dpq-gateway` on a taken port
fails at once with one line naming the port, and the first goes on serving.
Ownership: SIGHUP, SIGTERM or SIGKILL to `dpq up` leaves no process of it
(nodes, gateway, watchdog, PostgreSQL's postmaster) and no port held.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import psutil
import pytest
from support.cluster import wait_until
from support.dpq_up import CWD, ENV, Up, dpq, free_port_base, port_free, program

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)


def _serves(up: Up) -> None:
    enq = dpq("enqueue", "--target", up.target, "--priority", "2", "still here", timeout=90)
    assert enq.returncode == 0, enq.stderr
    assert len(enq.stdout.split()) == 1


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_second_cluster_on_taken_ports_fails_fast_and_the_first_keeps_serving(tmp_path):
    first = Up(tmp_path / "first")
    try:
        first.wait_up()
        _serves(first)

        # a second `dpq up` on the same ports, in another folder: refused before
        # anything starts (no data folder made), every taken port named
        second = dpq("up", "--data-dir", str(tmp_path / "second"),
                     "--port-base", str(first.base), timeout=30)
        assert second.returncode == 1
        line = _one_line(second.stderr)
        assert line.startswith("dpq up: ")
        for port, what in zip(first.ports, ("gateway", "node 1", "node 2", "node 3")):
            assert f"port {port} ({what}) is taken" in line, line
        assert not (tmp_path / "second").exists()

        # a second `dpq up` on the same data folder (other ports): refused too
        again = dpq("up", "--data-dir", str(first.data), "--port-base", str(free_port_base()),
                    timeout=30)
        assert again.returncode == 1
        assert "another dpq up" in _one_line(again.stderr)

        # a second dpq-node on node 1's port, and a second gateway on the gateway's
        node = program("dpq.node", "--id", "1", "--listen", f"127.0.0.1:{first.base + 1}",
                       "--peers", f"1=127.0.0.1:{first.base + 1}",
                       "--data-dir", str(tmp_path / "n1"), timeout=30)
        assert node.returncode == 2
        assert _one_line(node.stderr) == (
            f"dpq-node: port {first.base + 1} (--listen) is taken: another process listens on "
            f"127.0.0.1:{first.base + 1}")
        gateway = program("dpq.gateway", "--listen", first.target,
                          "--nodes", f"127.0.0.1:{first.base + 1}", timeout=30)
        assert gateway.returncode == 2
        assert f"port {first.base} (--listen) is taken" in _one_line(gateway.stderr)

        # the first never noticed
        _serves(first)
        assert not any("exited" in line for line in first.lines), first.lines
        assert first.interrupt() == 0
    finally:
        first.kill()


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGHUP", "SIGTERM", "SIGKILL"])
def test_dpq_up_leaves_nothing_behind_however_it_is_stopped(tmp_path, sig):
    up = Up(tmp_path / "data")
    started: list[psutil.Process] = []
    try:
        up.wait_up()
        started = up.descendants()
        names = sorted(" ".join(p.cmdline()[1:3]) for p in started)
        # three nodes, a gateway, the watchdog, and the postmaster
        assert len(started) == 6, names
        assert sum("dpq.node" in n for n in names) == 3 and any("dpq.lifeline" in n for n in names)
        postmaster = started[-1]
        assert postmaster.name() == "postgres"

        up.proc.send_signal(sig)
        code = up.proc.wait(90)
        assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0), up.lines

        _, alive = psutil.wait_procs(started, timeout=60)
        assert not alive, [(p.pid, p.cmdline()) for p in alive]
        wait_until(lambda: all(port_free(p) for p in up.ports), 30, "the ports to be free")
        assert not (up.data / "postgres" / "postmaster.pid").exists()
    finally:
        up.kill()
        for proc in started:  # left only if the test failed
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def test_a_single_node_killed_takes_its_embedded_postgres_with_it(tmp_path):
    port = free_port_base(1)
    node = subprocess.Popen(
        [sys.executable, "-m", "dpq.node", "--id", "1", "--listen", f"127.0.0.1:{port}",
         "--peers", f"1=127.0.0.1:{port}", "--data-dir", str(tmp_path / "n1")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV, cwd=CWD)
    postmaster = None
    try:
        lines: list[str] = []

        def read() -> None:
            for line in node.stdout:
                lines.append(line)  # noqa: PERF402 - seen as they come

        threading.Thread(target=read, daemon=True).start()
        wait_until(lambda: any("serving on" in line for line in lines) or node.poll() is not None,
                   90, "the node to serve")
        assert node.poll() is None, lines
        pidfile = tmp_path / "n1" / "postgres" / "postmaster.pid"
        postmaster = psutil.Process(int(pidfile.read_text().split()[0]))
        assert postmaster.name() == "postgres"
        node.kill()
        node.wait(30)
        postmaster.wait(60)  # raises TimeoutExpired if it lives on
        assert not pidfile.exists()
    finally:
        if node.poll() is None:
            node.kill()
        if postmaster is not None and postmaster.is_running():
            postmaster.kill()


def test_a_child_takes_its_cpus_and_its_parents_death_from_its_environment():
    """lifeline.child_env / adopt (no preexec_fn: see dpq.lifeline), in a real child."""
    import os
    import subprocess
    import sys

    from dpq import lifeline

    probe = ("import ctypes, os, signal\n"
             "from dpq import lifeline\n"
             "lifeline.adopt()\n"
             "libc = ctypes.CDLL(None)\n"
             "sig = ctypes.c_int()\n"
             "libc.prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG\n"
             "print(sig.value, sorted(os.sched_getaffinity(0)), "
             "lifeline.PARENT_ENV in os.environ)\n")
    cpus = {min(os.sched_getaffinity(0))}
    from dpq.cli.localcluster import PACKAGE_ROOT  # the dpq this test imported

    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT, **lifeline.child_env(cpus))
    assert env[lifeline.PARENT_ENV] == str(os.getpid())
    done = subprocess.run([sys.executable, "-c", probe], check=False, env=env,
                          capture_output=True, text=True, timeout=60,
                          **lifeline.popen_kwargs())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{int(signal.SIGTERM)} {sorted(cpus)} False"
