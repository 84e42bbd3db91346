"""One cluster, one identity: created at the first start, kept in every data
folder and in PostgreSQL, checked at every start and on every peer batch.

``establish`` is driven in-process against a real PostgreSQL; the rest with
real dpq-node processes.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from support.cluster import Cluster, free_ports, wait_until

from dpq.cli.localcluster import PACKAGE_ROOT
from dpq.node import identity
from dpq.v1 import queue_pb2

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

ENV = {"PYTHONPATH": PACKAGE_ROOT}


def read_id(folder: Path) -> dict:
    return json.loads((folder / identity.IDENTITY_FILE).read_text())


def database_id(dsn: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT cluster_id FROM dpq_cluster_identity").fetchone()
    return row[0] if row else None


# ------------------------------------------------------------------ in-process

def test_the_first_start_is_a_race_every_node_wins_the_same_id(tmp_path, pg_database):
    dsn = pg_database("race", migrated=False)  # the migration races too
    folders = [tmp_path / f"n{i}" for i in (1, 2, 3)]

    async def start_all():
        return await asyncio.gather(*(identity.establish(str(f), i, dsn)
                                      for i, f in enumerate(folders, 1)))

    found = asyncio.run(start_all())
    ids = {who.cluster_id for who in found}
    assert len(ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", ids.pop() or "")
    assert sorted(who.created for who in found) == [False, False, True]
    assert all(who.first_start and who.verified for who in found)
    assert database_id(dsn) == found[0].cluster_id
    for i, folder in enumerate(folders, 1):
        assert read_id(folder) == {"cluster_id": found[0].cluster_id, "node_id": i}
    # the next start finds the id in both places
    again = asyncio.run(identity.establish(str(folders[0]), 1, dsn))
    assert (again.cluster_id, again.created, again.first_start) == (found[0].cluster_id, False,
                                                                    False)
    # a new node with an empty folder joins the existing cluster (not created, first start)
    joined = asyncio.run(identity.establish(str(tmp_path / "n4"), 4, dsn))
    assert joined.cluster_id == found[0].cluster_id and joined.first_start and not joined.created


def test_another_clusters_database_or_another_nodes_folder_is_refused(tmp_path, pg_database):
    dsn_a, dsn_b = pg_database("ident_a"), pg_database("ident_b")
    a = asyncio.run(identity.establish(str(tmp_path / "a1"), 1, dsn_a))
    b = asyncio.run(identity.establish(str(tmp_path / "b1"), 1, dsn_b))
    assert a.cluster_id != b.cluster_id
    with pytest.raises(identity.IdentityError, match=f"belongs to cluster {a.fingerprint}"):
        asyncio.run(identity.establish(str(tmp_path / "a1"), 1, dsn_b))
    with pytest.raises(identity.IdentityError, match="belongs to node 1 .* not node 2"):
        asyncio.run(identity.establish(str(tmp_path / "a1"), 2, dsn_a))
    # refusing wrote nothing
    assert read_id(tmp_path / "a1")["cluster_id"] == a.cluster_id
    assert database_id(dsn_b) == b.cluster_id


def test_a_member_that_lost_its_log_but_kept_its_identity_must_rejoin(tmp_path, pg_database):
    dsn = pg_database("lost_log")
    folder = tmp_path / "n1"
    first = asyncio.run(identity.establish(str(folder), 1, dsn))
    assert identity.has_log(str(folder)), "the log is created before the member is recorded"
    shutil.rmtree(folder / "wal")  # the disk holding the log was replaced; identity.json kept
    with pytest.raises(identity.IdentityError, match=r"no write-ahead log .*--rejoin"):
        asyncio.run(identity.establish(str(folder), 1, dsn))
    # PostgreSQL down: it cannot tell whether this node voted before, so it does not start.
    with pytest.raises(identity.IdentityError, match="no write-ahead log .* unreachable"):
        asyncio.run(identity.establish(str(folder), 1, "postgresql://127.0.0.1:1/none",
                                       timeout_s=5))
    assert not identity.rejoining(str(folder))  # refusing wrote nothing
    again = asyncio.run(identity.establish(str(folder), 1, dsn, rejoin=True))
    assert again.rejoining and again.cluster_id == first.cluster_id and not again.first_start
    assert read_id(folder) == {"cluster_id": first.cluster_id, "node_id": 1}


def test_without_postgresql_only_a_known_identity_starts(tmp_path, pg_database):
    dsn = pg_database("ident_down")
    known = asyncio.run(identity.establish(str(tmp_path / "n1"), 1, dsn))
    down = "postgresql://127.0.0.1:1/nothing?connect_timeout=2"
    unverified = asyncio.run(identity.establish(str(tmp_path / "n1"), 1, down))
    assert unverified.cluster_id == known.cluster_id and not unverified.verified
    with pytest.raises(identity.IdentityError, match="first start needs PostgreSQL"):
        asyncio.run(identity.establish(str(tmp_path / "empty"), 1, down))
    assert not (tmp_path / "empty" / identity.IDENTITY_FILE).exists()


# ---------------------------------------------------------------- processes

def run_node(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dpq.node", *args], capture_output=True,
                          text=True, env=ENV, timeout=timeout, check=False)


def single_node(node_id: int, folder: Path, dsn: str, port: int) -> list[str]:
    return ["--id", str(node_id), "--listen", f"127.0.0.1:{port}", "--data-dir", str(folder),
            "--dsn", dsn]


def test_a_node_with_another_clusters_data_folder_or_database_refuses_to_start(
        tmp_path, pg_database):
    dsn_a, dsn_b = pg_database("proc_a"), pg_database("proc_b")
    [port] = free_ports(1)
    # cluster A: a real single node (no --peers, no --peer-listen), started and stopped
    folder_a = tmp_path / "a1"
    proc = subprocess.Popen([sys.executable, "-m", "dpq.node",
                             *single_node(1, folder_a, dsn_a, port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        wait_until(lambda: (folder_a / identity.IDENTITY_FILE).exists() or proc.poll() is not None,
                   60, "node A to settle its identity")
        assert proc.poll() is None, proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    a = read_id(folder_a)["cluster_id"]
    assert database_id(dsn_a) == a
    # cluster B: its identity settled in-process
    b = asyncio.run(identity.establish(str(tmp_path / "b1"), 1, dsn_b)).cluster_id

    for args, message in (
        (single_node(1, folder_a, dsn_b, port), f"belongs to cluster {identity.fingerprint(a)}"),
        (single_node(1, tmp_path / "b1", dsn_a, port),
         f"belongs to cluster {identity.fingerprint(b)}"),
        (single_node(2, folder_a, dsn_a, port), "belongs to node 1"),
    ):
        result = run_node(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert "Traceback" not in result.stderr
        assert a not in result.stderr and b not in result.stderr  # fingerprints only
    assert database_id(dsn_a) == a and database_id(dsn_b) == b


def test_two_insecure_clusters_pointed_at_each_other_exchange_nothing(tmp_path, pg_database):
    """Node 3 of each cluster names the other cluster's nodes 1 and 2 as its peers."""
    a = Cluster(tmp_path / "a", pg_database("cross_a"))
    b = Cluster(tmp_path / "b", pg_database("cross_b"))
    a.crossed[3] = f"1={b.peer_addresses[1]},2={b.peer_addresses[2]},3={a.peer_addresses[3]}"
    b.crossed[3] = f"1={a.peer_addresses[1]},2={a.peer_addresses[2]},3={b.peer_addresses[3]}"
    try:
        a.start()
        b.start()
        leaders = {name: c.wait_leader(60, among=[1, 2]) for name, c in (("a", a), ("b", b))}
        for name, c in (("a", a), ("b", b)):
            ids = c.stub(1).Enqueue(queue_pb2.EnqueueRequest(jobs=[
                queue_pb2.NewJob(queue=f"only-{name}", priority=1, payload=name.encode())]),
                timeout=20).job_ids
            assert len(ids) == 1  # committed by a majority of its own cluster
        # each refused node has been retried at several times by now
        for c in (a, b):
            for i in (1, 2):
                wait_until(lambda c=c, i=i: c.report(i).counters["peers.refused_batches"] >= 3,
                           30, f"node {i} to refuse the other cluster's node 3 again and again")
        fingerprints = {c.info(1).cluster_fingerprint for c in (a, b)}
        assert len(fingerprints) == 2
        for name, c, other in (("a", a, "b"), ("b", b, "a")):
            assert not c.exited()
            assert c.wait_leader(60, among=[1, 2]) in (1, 2)
            for i in (1, 2):
                queues = {s.queue for s in c.stub(i).Stats(queue_pb2.StatsRequest(),
                                                           timeout=5).queues}
                assert f"only-{name}" in queues and f"only-{other}" not in queues
                text = c.log_path(i).read_text(errors="replace")
                assert text.count("refused peer traffic from node 3 of cluster") == 1, text[-3000:]
            # the crossed node says once per link that it is refused, then keeps quiet
            text = c.log_path(3).read_text(errors="replace")
            for i in (1, 2):
                assert text.count(f"stream to node {i} ") == 1, text[-3000:]
                assert "PERMISSION_DENIED" in text
        assert leaders["a"] in (1, 2) and leaders["b"] in (1, 2)
    finally:
        a.stop_all()
        b.stop_all()
