"""The driver checks a peer's snapshot before anything saves it (issue 10: a forged
InstallSnapshot of 4 junk bytes was saved, then killed the follower at every
restart), and a node whose saved snapshot does not load stops with one line."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import dpq
from dpq.node.driver import ReplicaDriver
from dpq.paxos import Ballot, Config, InstallSnapshot, Promise, Replica, Role, Snapshot
from dpq.paxos.messages import Accept, Prepare
from dpq.paxos.wal import WriteAheadLog
from dpq.queue import snapshot as snapshots
from dpq.queue.state import QueueState


class Harness:
    """A follower (node 1 of 1, 2, 3) with a real WAL and a driver, no network."""

    def __init__(self, directory: Path, node_id: int = 1) -> None:
        self.wal = WriteAheadLog.open(directory)
        self.replica = Replica(Config(node_id, (1, 2, 3)), random.Random(0),
                               recovered=self.wal.recovered)
        self.sent: list = []
        self.installed: list[Snapshot] = []
        self.loaded: list[object] = []  # what checking each installed snapshot loaded
        self.driver = ReplicaDriver(self.replica, self.wal, self.sent.extend, lambda e: None,
                                    self._install, lambda: None,
                                    tick_s=1.0,
                                    check_snapshot=snapshots.validate)

    def _install(self, snapshot: Snapshot, loaded: object) -> None:
        self.installed.append(snapshot)
        self.loaded.append(loaded)

    def deliver(self, *messages) -> None:
        self.driver.deliver(messages)
        asyncio.run(self.driver._process())


def good_snapshot(slot: int) -> Snapshot:
    state = QueueState(members=frozenset({1, 2, 3}))
    state.applied_slot = slot
    return Snapshot(slot, snapshots.dump(state))


def test_a_junk_install_snapshot_is_dropped_and_nothing_is_saved(tmp_path, caplog) -> None:
    h = Harness(tmp_path / "wal")
    junk = InstallSnapshot(2, 1, Ballot(3, 2), Snapshot(40, b"\x00\x01\x02\x03"), 40)
    with caplog.at_level(logging.ERROR, logger="dpq.paxos.driver"):
        h.deliver(junk, junk)  # twice: logged once
    assert h.wal.snapshot is None and h.installed == [] and h.sent == []
    assert h.replica.promised < Ballot(3, 2)  # not even the ballot was taken from it
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and h.driver.refused_snapshots == 2
    assert "InstallSnapshot from node 2" in lines[0] and "slot 40" in lines[0]
    assert "too short for a snapshot header" in lines[0]
    h.driver.close()
    # Nothing on disk to trip over at a restart.
    assert WriteAheadLog.open(tmp_path / "wal").recovered.snapshot is None


def test_a_good_install_snapshot_is_saved_and_installed(tmp_path) -> None:
    h = Harness(tmp_path / "wal")
    snap = good_snapshot(40)
    h.deliver(InstallSnapshot(2, 1, Ballot(3, 2), snap, 40))
    assert h.wal.snapshot == snap and h.installed == [snap]
    # Loaded once, when it was checked (in a thread): installing it takes that state over.
    assert isinstance(h.loaded[0], QueueState) and h.loaded[0].applied_slot == 40
    assert h.replica.commit_index == 40 and h.driver.refused_snapshots == 0
    h.driver.close()


def test_a_promise_with_a_junk_snapshot_is_dropped(tmp_path) -> None:
    h = Harness(tmp_path / "wal")
    for _ in range(40):  # campaign
        h.replica.tick()
        if h.replica.role is Role.CANDIDATE:
            break
    h.deliver()
    prepare = next(m for m in h.sent if isinstance(m, Prepare))
    ballot = prepare.ballot
    entries = ()
    h.deliver(Promise(2, 1, ballot, 7, entries, Snapshot(7, b"junk")))
    assert h.replica.role is Role.CANDIDATE and h.wal.snapshot is None
    h.deliver(Promise(3, 1, ballot, 7, entries, good_snapshot(7)))
    assert h.replica.is_leader and h.wal.snapshot is not None and h.wal.snapshot.slot == 7
    h.driver.close()


def test_a_snapshot_the_replica_would_not_install_is_not_even_loaded(tmp_path) -> None:
    calls: list[bytes] = []
    h = Harness(tmp_path / "wal")
    h.driver._check_snapshot = calls.append
    h.deliver(Accept(2, 1, Ballot(3, 2), 1, (), 0))
    h.deliver(InstallSnapshot(2, 1, Ballot(3, 2), Snapshot(0, b"old"), 0))
    assert calls == []
    h.driver.close()


@pytest.mark.slow
def test_a_node_whose_saved_snapshot_does_not_load_stops_with_one_line(tmp_path, pg_db) -> None:
    # The state before this issue: a junk snapshot saved, the node crash-looping.
    data = tmp_path / "n1"
    with WriteAheadLog.open(data / "wal") as wal:
        wal.save_snapshot(Snapshot(12, b"\x00\x01\x02\x03"))
    package_root = str(Path(dpq.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": package_root}
    code = "import sys; from dpq.cli import node_main; sys.exit(node_main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "--id", "1", "--listen", "127.0.0.1:0", "--peers",
         "1=127.0.0.1:0", "--data-dir", str(data), "--dsn", pg_db],
        check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(data / "wal" / "snapshot") in lines[0] and "slot 12" in lines[0]
    assert "Move " in lines[0] and "--rejoin" in lines[0]
