"""PostgreSQL down, frozen or misconfigured, and a node cut off from its quorum.

Real ``dpq-node`` processes on a PostgreSQL server of the test's own
(``support.private_pg``) that the test stops, starts again, freezes (SIGSTOP)
and thaws. What must hold:

* a cluster started while PostgreSQL is down comes up, serves from the log,
  and writes everything once PostgreSQL is back; no node exits, and the
  outage is one ERROR line, not one per try;
* a DSN that can never work stops ``dpq-node`` at once: exit code 2, one
  line on stderr, no traceback;
* a frozen server does not hang the writer: it times out, backs off, and
  catches up after SIGCONT;
* PostgreSQL may fall only so far behind: past ``--max-postgres-lag-slots``
  Enqueue is UNAVAILABLE naming PostgreSQL, acks still work;
* a node that lost its quorum answers UNAVAILABLE well before the client's
  deadline instead of holding the call.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psycopg
import pytest
from support.cluster import Cluster, free_ports, wait_until
from support.private_pg import PrivatePostgres

from dpq.cli.localcluster import PACKAGE_ROOT
from dpq.v1 import queue_pb2

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

QUEUE = "outage"
# Short timeouts so a frozen server is noticed within seconds.
ARGS = ("--postgres-timeout-ms", "2000", "--dead-after-ms", "60000")


def jobs(n: int, tag: str) -> list[queue_pb2.NewJob]:
    return [queue_pb2.NewJob(queue=QUEUE, priority=1 + i % 5, payload=f"{tag}-{i}".encode(),
                             dedup_key=f"{tag}-{i}") for i in range(n)]


def ref(job: queue_pb2.Job) -> queue_pb2.JobRef:
    """The lease token of a delivered job (with its receipt, where the proto has one)."""
    token = queue_pb2.JobRef(job_id=job.job_id, attempt=job.attempt)
    if "receipt" in queue_pb2.JobRef.DESCRIPTOR.fields_by_name:
        token.receipt = job.receipt
    return token


def enqueue(cluster: Cluster, node: int, batch: list[queue_pb2.NewJob]) -> list[int]:
    return list(cluster.stub(node).Enqueue(queue_pb2.EnqueueRequest(jobs=batch),
                                           timeout=20).job_ids)


def take(cluster: Cluster, count: int, timeout_s: float = 30) -> list[queue_pb2.Job]:
    """Dequeue ``count`` jobs from whichever nodes own them (each node serves its own)."""
    taken: list[queue_pb2.Job] = []
    deadline = time.monotonic() + timeout_s
    while len(taken) < count and time.monotonic() < deadline:
        for node in sorted(cluster.procs):
            want = count - len(taken)
            if want <= 0:
                break
            taken += cluster.stub(node).Dequeue(queue_pb2.DequeueRequest(
                queue=QUEUE, max_jobs=want, wait_ms=200, lease_ms=60_000, consumer_id="t"),
                timeout=20).jobs
    assert len(taken) == count, f"dequeued {len(taken)} of {count} jobs within {timeout_s}s"
    return taken


def error_lines(cluster: Cluster, node: int, needle: str = "PostgreSQL") -> list[str]:
    text = cluster.log_path(node).read_text(errors="replace")
    return [line for line in text.splitlines() if "[ERROR]" in line and needle in line]


def all_error_lines(cluster: Cluster) -> list[str]:
    return [line for i in cluster.ids for line in error_lines(cluster, i, "")]


def assert_alive(cluster: Cluster) -> None:
    assert not cluster.exited(), f"nodes exited: {cluster.exited()}"


@pytest.fixture
def pg():
    """A private server with a ``dpq`` database, running."""
    with PrivatePostgres.temporary() as server:
        server.start()
        yield server


# ------------------------------------------------------------------ outages


def born(root, pg, args, nodes=3) -> None:
    """Start and stop a cluster once while PostgreSQL is up: a cluster's identity is
    created in its database, so only a cluster that exists can restart without it
    (a maintenance window)."""
    with Cluster(root, pg.dsn, nodes=nodes, args=args) as cluster:
        cluster.wait_leader(timeout_s=60)


def test_cluster_started_while_postgres_is_down_serves_and_catches_up(tmp_path, pg):
    born(tmp_path / "c", pg, ARGS)
    pg.stop()
    with Cluster(tmp_path / "c", pg.dsn, args=ARGS) as cluster:
        leader = cluster.wait_leader(timeout_s=60)
        ids = enqueue(cluster, leader, jobs(20, "a"))
        follower = next(i for i in cluster.ids if i != leader)
        ids += enqueue(cluster, follower, jobs(20, "b"))
        assert len(set(ids)) == 40
        taken = take(cluster, 10)
        results = cluster.stub(leader).Ack(
            queue_pb2.AckRequest(jobs=[ref(j) for j in taken]), timeout=20).results
        assert all(r.ok for r in results), results
        acked = {j.job_id for j in taken}

        # The writer has met the outage and backed off (several tries by now).
        wait_until(lambda: error_lines(cluster, leader), 30, "the leader's outage line")
        time.sleep(3)  # what once was an ERROR line every 100 ms
        assert_alive(cluster)
        outage_lines = [line for line in all_error_lines(cluster) if "PostgreSQL" in line]
        assert 1 <= len(outage_lines) <= 3, outage_lines  # one per leader that tried

        pg.start()
        expected = set(ids) - acked
        wait_until(lambda: pg.job_ids() == expected, 60, "every unacked job in PostgreSQL")
        wait_until(lambda: "works again" in cluster.log_path(leader).read_text(), 30,
                   "the leader's end-of-outage line")
        assert_alive(cluster)
        # And the queue goes on: new jobs reach PostgreSQL too.
        more = enqueue(cluster, leader, jobs(5, "c"))
        wait_until(lambda: set(more) <= pg.job_ids(), 30, "new jobs in PostgreSQL")
        outage_lines = [line for line in all_error_lines(cluster) if "PostgreSQL" in line]
        assert 1 <= len(outage_lines) <= 3, outage_lines


def test_frozen_postgres_times_out_backs_off_and_resumes(tmp_path, pg):
    with Cluster(tmp_path / "c", pg.dsn, args=ARGS) as cluster:
        leader = cluster.wait_leader(timeout_s=60)
        ids = enqueue(cluster, leader, jobs(10, "before"))
        wait_until(lambda: set(ids) <= pg.job_ids(), 30, "the first jobs in PostgreSQL")

        pg.freeze()
        try:
            # Served from the log while PostgreSQL does not answer.
            ids += enqueue(cluster, leader, jobs(10, "frozen"))
            lines = wait_until(lambda: error_lines(cluster, leader), 30,
                               "the writer noticing the frozen server")
            assert "within" in lines[0] or "timeout" in lines[0].lower(), lines
            ids += enqueue(cluster, leader, jobs(10, "still"))
            time.sleep(5)  # a few backed-off tries against the frozen server (connects too)
        finally:
            pg.thaw()
        wait_until(lambda: pg.job_ids() == set(ids), 60, "every job in PostgreSQL after SIGCONT")
        wait_until(lambda: "works again" in cluster.log_path(leader).read_text(), 30,
                   "the leader's end-of-outage line")
        assert len(error_lines(cluster, leader)) == 1, error_lines(cluster, leader)
        assert_alive(cluster)


def test_enqueue_refused_past_the_lag_bound_while_acks_pass(tmp_path, pg):
    args = (*ARGS, "--max-postgres-lag-slots", "8")
    born(tmp_path / "c", pg, args)
    pg.stop()
    with Cluster(tmp_path / "c", pg.dsn, args=args) as cluster:
        leader = cluster.wait_leader(timeout_s=60)
        stub = cluster.stub(leader)
        accepted: list[int] = []
        refused = None
        for i in range(100):  # each Enqueue is one slot: the bound comes within ~8
            try:
                accepted += stub.Enqueue(queue_pb2.EnqueueRequest(jobs=jobs(1, f"j{i}")),
                                         timeout=20).job_ids
            except grpc.RpcError as exc:
                refused = exc
                break
        assert refused is not None, f"{len(accepted)} enqueues were all accepted"
        assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused
        assert "PostgreSQL" in refused.details() and "8" in refused.details(), refused.details()
        assert accepted, "the bound refused the very first job"
        # A follower refuses too (every node knows how far PostgreSQL is).
        follower = next(i for i in cluster.ids if i != leader)
        with pytest.raises(grpc.RpcError) as again:
            enqueue(cluster, follower, jobs(1, "f"))
        assert again.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "PostgreSQL" in again.value.details()

        # Through a gateway (which proposes through the leader) too, at once.
        cluster.start_gateway()
        cluster.wait_ready(timeout_s=60)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as via_gateway:
            cluster.gateway_stub().Enqueue(queue_pb2.EnqueueRequest(jobs=jobs(1, "g")),
                                           timeout=20)
        assert via_gateway.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "PostgreSQL" in via_gateway.value.details(), via_gateway.value.details()
        assert time.monotonic() - started < 10  # refused, not retried until a deadline

        # What drains the queue still works: dequeue (a lease) and ack.
        [job] = take(cluster, 1)
        [result] = stub.Ack(queue_pb2.AckRequest(jobs=[ref(job)]), timeout=20).results
        assert result.ok, result

        pg.start()
        after = wait_until(lambda: _try_enqueue(cluster, leader), 60,
                           "Enqueue accepted again once PostgreSQL is back")
        expected = (set(accepted) - {job.job_id}) | set(after)
        wait_until(lambda: pg.job_ids() == expected, 60, "every unacked job in PostgreSQL")
        assert_alive(cluster)


def _try_enqueue(cluster: Cluster, node: int) -> list[int] | None:
    try:
        return enqueue(cluster, node, jobs(1, "after"))
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return None


# ------------------------------------------------------------ bad DSNs


def run_node(tmp_path: Path, dsn: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    [port] = free_ports(1)
    address = f"127.0.0.1:{port}"
    return subprocess.run(
        [sys.executable, "-m", "dpq.node", "--id", "1", "--listen", address,
         "--peers", f"1={address}", "--data-dir", str(tmp_path / "node"), "--dsn", dsn],
        capture_output=True, text=True, timeout=timeout_s, check=False,
        env={"PYTHONPATH": PACKAGE_ROOT, "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def password_pg():
    """A private server where role ``dpq_pw`` must give its password (scram-sha-256)."""
    with PrivatePostgres.temporary() as server:
        server.start()
        yield from _with_password_role(server)


def _with_password_role(server: PrivatePostgres):
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE dpq_pw LOGIN PASSWORD 'right-password'")
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        hba.write_text("local all dpq_pw scram-sha-256\n" + hba.read_text())
        conn.execute("SELECT pg_reload_conf()")
    yield server


def _with(dsn: str, **changes: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, **changes)


@pytest.mark.parametrize("case", ["malformed", "no such database", "no such role",
                                  "wrong password", "no password"])
def test_dsn_that_cannot_work_is_refused_at_start(tmp_path, password_pg, case):
    dsn = {
        "malformed": "postgresql://dpq:secret@[::1/dpq",
        "no such database": _with(password_pg.dsn, dbname="no_such_db"),
        "no such role": _with(password_pg.dsn, user="no_such_role"),
        "wrong password": _with(password_pg.dsn, user="dpq_pw", password="wrong-password"),
        "no password": _with(password_pg.dsn, user="dpq_pw", password=""),
    }[case]
    done = run_node(tmp_path, dsn)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dpq-node: "), done.stderr
    assert "secret" not in done.stderr and "wrong-password" not in done.stderr


def test_right_password_starts(tmp_path, password_pg):
    """The same server and role with the right password: the node serves (and is stopped)."""
    [port] = free_ports(1)
    address = f"127.0.0.1:{port}"
    dsn = _with(password_pg.dsn, user="dpq_pw", password="right-password")
    with psycopg.connect(password_pg.admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE DATABASE dpq_pw_db OWNER dpq_pw")
    dsn = _with(dsn, dbname="dpq_pw_db")
    out = tmp_path / "stdout.txt"
    with open(out, "w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dpq.node", "--id", "1", "--listen", address,
             "--peers", f"1={address}", "--data-dir", str(tmp_path / "node"), "--dsn", dsn],
            stdout=stdout, stderr=subprocess.PIPE, text=True,
            env={"PYTHONPATH": PACKAGE_ROOT, "PATH": "/usr/bin:/bin"})
    try:
        wait_until(lambda: "serving" in out.read_text() or proc.poll() is not None, 60,
                   "the node to serve or exit")
        assert "serving" in out.read_text(), (proc.poll(), out.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err


def test_server_down_at_start_is_a_warning_not_an_exit(tmp_path, pg):
    """A single node whose server is down starts, serves Enqueue, and says why it waits."""
    born(tmp_path / "c", pg, ARGS, nodes=1)
    pg.stop()
    with Cluster(tmp_path / "c", pg.dsn, nodes=1, args=ARGS) as cluster:
        cluster.wait_leader(timeout_s=60)
        assert enqueue(cluster, 1, jobs(3, "solo"))
        text = cluster.log_path(1).read_text()
        assert "[WARNING]" in text and "not reachable" in text, text
        assert "Traceback" not in text
        assert_alive(cluster)


# ------------------------------------------------------------ lost quorum

DEADLINE_S = 8.0  # a bound on hanging, far above the election timeout (1-2 s)


def _timed_enqueue(cluster: Cluster, node: int) -> tuple[grpc.StatusCode, str, float]:
    started = time.monotonic()
    try:
        cluster.stub(node).Enqueue(queue_pb2.EnqueueRequest(jobs=jobs(1, f"iso-{started}")),
                                   timeout=DEADLINE_S)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details()
    return code, details, time.monotonic() - started


def test_isolated_node_answers_unavailable_before_the_deadline(tmp_path, pg_database):
    with Cluster(tmp_path / "c", pg_database("isolated"), args=ARGS) as cluster:
        leader = cluster.wait_leader(timeout_s=60)
        others = [i for i in cluster.ids if i != leader]
        for i in others:  # the old leader is cut off: SIGSTOP, the worst kind of silence
            cluster.procs[i].send_signal(signal.SIGSTOP)
        try:
            first = _timed_enqueue(cluster, leader)
            second = _timed_enqueue(cluster, leader)
        finally:
            for i in others:
                cluster.procs[i].send_signal(signal.SIGCONT)
        print(f"\nisolated old leader: first Enqueue {first[2]:.2f}s, second {second[2]:.2f}s")
        for code, details, elapsed in (first, second):
            assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
            assert elapsed < DEADLINE_S - 0.5, elapsed  # not held until the deadline
            assert "quorum" in details, details
        # Healed: the cluster elects a leader and takes jobs again.
        leader = cluster.wait_leader(timeout_s=60)
        assert enqueue(cluster, leader, jobs(1, "healed"))

        # A follower whose leader and other follower are gone (SIGKILL).
        follower = next(i for i in cluster.ids if i != leader)
        for i in [i for i in cluster.ids if i != follower]:
            cluster.kill(i)
        third = _timed_enqueue(cluster, follower)
        fourth = _timed_enqueue(cluster, follower)
        print(f"follower left alone: first Enqueue {third[2]:.2f}s, second {fourth[2]:.2f}s")
        for code, details, elapsed in (third, fourth):
            assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
            assert elapsed < DEADLINE_S - 0.5, elapsed
        assert "quorum" in fourth[1], fourth[1]
        assert_alive(cluster)
