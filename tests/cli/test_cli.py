"""The command line as a user runs it: `dpq up` in one terminal, commands in another."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from support.cluster import wait_until
from support.dpq_up import CWD, ENV, Up, dpq, node_pids

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)


def test_dpq_up_serves_the_cli_survives_a_dead_node_and_keeps_jobs_across_restarts(tmp_path):
    data = tmp_path / "dpq-data"
    up = Up(data)
    try:
        up.wait_up()
        assert any("gateway" in line and up.target in line for line in up.lines)
        # the banner names both planes of every node, and says it is plaintext
        wait_until(lambda: any("Ctrl-C stops everything" in line for line in up.lines), 30,
                   "the whole banner")
        assert any(f"127.0.0.1:{up.base + 1} " in line and f"127.0.0.1:{up.base + 11} " in line
                   for line in up.lines), up.lines
        assert any(line.strip().startswith("plaintext:") for line in up.lines), up.lines
        # Prometheus metrics on port-base + 2000 (gateway) and + 2001..2003 (nodes)
        metrics = [f"http://127.0.0.1:{up.base + 2000 + i}/metrics" for i in range(4)]
        assert any(all(url in line for url in metrics) for line in up.lines), up.lines
        with urllib.request.urlopen(metrics[0], timeout=10) as response:
            assert b"dpq_gateway_node_weight" in response.read()
        enq = dpq("enqueue", "--target", up.target, "--priority", "1", "first", "second")
        assert enq.returncode == 0, enq.stderr
        ids = [int(x) for x in enq.stdout.split()]
        more = dpq("enqueue", "--target", up.target, "--queue", "mail", "--priority", "4",
                   stdin="a@x\nb@x\nc@x\n")
        assert more.returncode == 0 and len(more.stdout.split()) == 3

        stats = dpq("stats", "--target", up.target)
        assert stats.returncode == 0, stats.stderr
        rows = {line.split()[0]: line.split() for line in stats.stdout.splitlines()[1:]}
        assert rows["default"][1] == "2" and rows["mail"][4] == "3"  # p1 column, p4 column

        status = dpq("status", "--target", up.target)
        assert status.returncode == 0, status.stderr
        assert "leader: node" in status.stdout and "weight" in status.stdout
        assert len([line for line in status.stdout.splitlines() if "127.0.0.1:" in line]) == 3

        got = dpq("consume", "--target", up.target, "--count", "2", "--wait", "2s")
        assert got.returncode == 0, got.stderr
        assert sorted(int(line.split("\t")[0]) for line in got.stdout.splitlines()) == sorted(ids)

        # kill a node: the others serve, nothing is lost
        pids = node_pids(data)
        assert sorted(pids) == [1, 2, 3]
        os.kill(pids[2], signal.SIGKILL)
        wait_until(lambda: any("node 2 exited" in line for line in up.lines), 15,
                   "dpq up to notice the dead node")
        mail = dpq("consume", "--target", up.target, "--queue", "mail", "--count", "3",
                   "--no-ack", "--wait", "5s", timeout=90)
        assert mail.returncode == 0, mail.stderr
        assert len(mail.stdout.splitlines()) == 3
        assert up.interrupt() == 0
        assert node_pids(data) == {}
    finally:
        if up.proc.poll() is None:
            up.proc.kill()

    # the same data folder: the mail jobs given back are still there
    again = Up(data)
    try:
        again.wait_up()
        stats = dpq("stats", "--target", again.target, "--queue", "mail")
        assert stats.returncode == 0, stats.stderr
        # all three are still there: ready, or (when a long-poll answer was in
        # flight as the consumer closed) leased until that lease runs out
        row = stats.stdout.splitlines()[1].split()
        assert int(row[6]) + int(row[8]) == 3 and row[9] == "0", stats.stdout
        assert again.interrupt() == 0
    finally:
        if again.proc.poll() is None:
            again.proc.kill()


def test_dpq_up_demo_runs_to_the_end(tmp_path):
    demo = Up(tmp_path / "demo", "--demo")
    try:
        assert demo.proc.wait(180) == 0, "\n".join(demo.lines[-30:])
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
    text = "\n".join(demo.lines)
    assert "dpq is up" in text and "priority   jobs" in text
    assert "priority-5 jobs were served while priority-1 jobs kept arriving" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("stats", "--target", "127.0.0.1:1"), "127.0.0.1:1 is not answering"),
        (("enqueue", "--target", "127.0.0.1:1", "--priority", "1", "x"), "dpq enqueue:"),
        (("enqueue", "--delay", "soon", "x"), "not a duration"),
    ],
)
def test_errors_are_one_clear_line_and_a_non_zero_exit(args, message):
    result = dpq(*args, timeout=120)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]  # (argparse puts its usage above)
    assert last.startswith("dpq ") and message in last, result.stderr
    assert "Traceback" not in result.stderr


def test_every_command_has_help():
    for command in ("up", "enqueue", "consume", "stats", "status", "demo"):
        result = dpq(command, "--help")
        assert result.returncode == 0 and "usage: dpq " + command in result.stdout
    for program in ("dpq.node", "dpq.gateway"):
        result = subprocess.run([sys.executable, "-m", program, "--help"], check=False,
                                capture_output=True,
                                text=True, env=ENV, timeout=30, cwd=CWD)
        assert result.returncode == 0 and "usage:" in result.stdout
