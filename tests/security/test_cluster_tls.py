"""TLS end to end: real ``dpq-node`` and ``dpq-gateway`` processes started with
``--tls-dir``, and ``dpq up --tls`` driven through the CLI.

What is checked: a 3-node cluster elects a leader over mutual TLS; the client
library (``tls_dir=``) enqueues and consumes through the gateway and at the
nodes; no token or a wrong one is ``UNAUTHENTICATED`` on a node and on the
gateway; plaintext reaches no TLS port; on the peer port a certificate of
another CA (or none) fails the handshake, a client certificate is refused,
the gateway's may not Stream nor propose more than Enqueue, and a node's
certificate cannot speak for another node id.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.cluster import Cluster, free_ports, wait_until
from support.dpq_up import free_port_base

from dpq.cli import commands, up
from dpq.cli.localcluster import PACKAGE_ROOT
from dpq.client import Consumer, Producer
from dpq.security import certs
from dpq.security.auth import MISSING_TOKEN, WRONG_TOKEN
from dpq.security.identity import Identity
from dpq.security.tls import (
    TlsMaterial,
    client_channel_credentials,
    peer_channel_credentials,
)
from dpq.v1 import log_pb2, queue_pb2, queue_pb2_grpc, replication_pb2, replication_pb2_grpc

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

QUEUE = "tls-e2e"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database):
    root = tmp_path_factory.mktemp("tls-cluster")
    with Cluster(root, pg_database("tls"), tls=True, args=("--dead-after-ms", "1500")) as c:
        c.start_gateway_and_wait(120)
        yield c


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):  # a response stream: its first answer
            next(result)
    return info.value


def material(cluster: Cluster, holder: Identity, directory: str | None = None) -> TlsMaterial:
    folder = Path(directory or cluster.tls_dir)
    return TlsMaterial.from_files(folder / certs.cert_file(holder), folder / certs.key_file(holder),
                                  folder / certs.CA_FILE)


def peer_stub(cluster: Cluster, node_id: int, creds: grpc.ChannelCredentials | None):
    address = cluster.peer_addresses[node_id]
    channel = (grpc.secure_channel(address, creds) if creds is not None
               else grpc.insecure_channel(address))
    return channel, replication_pb2_grpc.ReplicationStub(channel)


def ballots(cluster: Cluster) -> list[str]:
    return [n.ballot for i in cluster.ids for n in cluster.info(i).nodes]


# ------------------------------------------------------------------ jobs flow

def test_a_tls_cluster_elects_a_leader_and_serves_jobs_through_gateway_and_nodes(cluster):
    leader = cluster.wait_leader(60)
    assert leader in cluster.ids
    assert not cluster.insecure
    for i in cluster.ids:  # the nodes started with TLS, not --insecure
        assert "--insecure" not in cluster.procs[i].args
    with Producer(cluster.gateway_address, tls_dir=cluster.tls_dir) as producer:
        via_gateway = [producer.enqueue(f"gateway {n}".encode(), priority=1, queue=QUEUE)
                       for n in range(3)]
    with Producer(cluster.addresses[2], tls_dir=cluster.tls_dir) as producer:
        at_node = producer.enqueue(b"node 2", priority=2, queue=QUEUE)
    expected = {*via_gateway, at_node}
    assert len(expected) == 4

    got: dict[int, bytes] = {}
    # At the nodes: the consumer learns every node from ClusterInfo and polls each.
    with Consumer(list(cluster.addresses.values()), queue=QUEUE, wait=1.0,
                  tls_dir=cluster.tls_dir) as consumer:
        def take():
            job = consumer.receive(timeout=2)
            if job is not None:
                got[job.id] = job.payload
                job.ack()
            return expected <= set(got)

        wait_until(take, 60, "every job delivered at the nodes")
    assert got[at_node] == b"node 2"

    # Through the gateway: forwarded to a node's client port over TLS + token.
    with Producer(cluster.gateway_address, tls_dir=cluster.tls_dir) as producer:
        last = producer.enqueue(b"via gateway dequeue", priority=1, queue=QUEUE)
    stub = cluster.gateway_stub()
    jobs = wait_until(lambda: list(stub.Dequeue(queue_pb2.DequeueRequest(
        queue=QUEUE, max_jobs=1, wait_ms=1000, lease_ms=30_000, consumer_id="t"),
        timeout=20).jobs), 60, "a job dequeued through the gateway")
    assert [j.job_id for j in jobs] == [last]
    info = cluster.gateway_info()
    assert info.served_by == "gateway" and info.leader_id == leader


# ------------------------------------------------------------- client port

def test_no_token_or_a_wrong_token_is_unauthenticated_on_nodes_and_gateway(cluster):
    ca = material(cluster, Identity("gateway")).ca
    for address in (cluster.gateway_address, *cluster.addresses.values()):
        for creds, why in ((client_channel_credentials(ca), MISSING_TOKEN),
                           (client_channel_credentials(ca, "not-the-token"), WRONG_TOKEN)):
            with grpc.secure_channel(address, creds) as channel:
                queue = queue_pb2_grpc.QueueStub(channel)
                for call, request in ((queue.ClusterInfo, queue_pb2.ClusterInfoRequest()),
                                      (queue.Enqueue, queue_pb2.EnqueueRequest(jobs=[
                                          queue_pb2.NewJob(queue=QUEUE, priority=1,
                                                           payload=b"intruder")])),
                                      (queue.Dequeue, queue_pb2.DequeueRequest(
                                          queue=QUEUE, max_jobs=1, wait_ms=10))):
                    error = rpc_error(call, request, timeout=10)
                    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (address, error)
                    assert error.details() == why
                # Health too: nothing is answered without the token.
                error = rpc_error(health_pb2_grpc.HealthStub(channel).Check,
                                  health_pb2.HealthCheckRequest(), timeout=10)
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # The refused calls are in the request log (it runs before the token check), and
    # the refusals in the error log.
    for folder in (cluster.root / "n1" / "logs", cluster.root / "gateway"):
        requests = (folder / "requests.log").read_text(errors="replace")
        assert "Received POST request for /grpc.health.v1.Health/Check" in requests, folder
        assert MISSING_TOKEN in (folder / "errors.log").read_text(errors="replace"), folder
    # ... and with the token, the same ports answer.
    assert cluster.info(1).node_id == 1 and cluster.gateway_info().served_by == "gateway"
    assert sum(s.ready_by_priority[0] for s in cluster.stub(1).Stats(
        queue_pb2.StatsRequest(queue=QUEUE), timeout=10).queues) == 0  # no intruder job


def test_plaintext_reaches_no_tls_port(cluster):
    for address in (cluster.gateway_address, *cluster.addresses.values(),
                    *cluster.peer_addresses.values()):
        with grpc.insecure_channel(address) as channel:
            error = rpc_error(queue_pb2_grpc.QueueStub(channel).ClusterInfo,
                              queue_pb2.ClusterInfoRequest(), timeout=5)
            assert error.code() == grpc.StatusCode.UNAVAILABLE, (address, error)


# --------------------------------------------------------------- peer port

def test_a_certificate_of_another_ca_or_none_cannot_open_the_peer_port(cluster, other_dir):
    target = cluster.wait_leader(60)
    outsiders = {
        "another CA's node 2": peer_channel_credentials(material(cluster, Identity("node", 2),
                                                                other_dir)),
        "another CA's gateway": peer_channel_credentials(material(cluster, Identity("gateway"),
                                                                  other_dir)),
        # TLS that trusts our CA but presents no certificate of its own
        "no certificate": client_channel_credentials(material(cluster, Identity("gateway")).ca),
    }
    ours = cluster.cluster_id(target)
    ack = log_pb2.CommandBatch(commands=[log_pb2.Command(ack=log_pb2.AckCommand(
        jobs=[queue_pb2.JobRef(job_id=1, attempt=1)]))]).SerializeToString()
    prepare = replication_pb2.PaxosMessage(src=2, dst=target, prepare=replication_pb2.Prepare(
        ballot=replication_pb2.Ballot(round=2**40, node=2)))
    for who, creds in outsiders.items():
        channel, stub = peer_stub(cluster, target, creds)
        with channel:
            calls = (
                (stub.Propose, replication_pb2.ProposeRequest(client_id="x", seq=1, batch=ack,
                                                              cluster_id=ours)),
                (stub.Stream, iter([replication_pb2.PeerBatch(messages=[prepare], sender=2,
                                                              cluster_id=ours)])),
                (stub.WatchHealth, replication_pb2.HealthRequest()),
            )
            for call, request in calls:
                error = rpc_error(call, request, timeout=10)
                assert error.code() == grpc.StatusCode.UNAVAILABLE, (who, error)
    assert all(str(2**40) not in b for b in ballots(cluster))
    assert cluster.wait_leader(30) == target


def test_a_client_certificate_is_kept_off_replication(cluster):
    target = cluster.wait_leader(60)
    ours = cluster.cluster_id(target)
    enqueue = log_pb2.CommandBatch(commands=[log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
        jobs=[queue_pb2.NewJob(queue=QUEUE, priority=1, payload=b"x")], owners=[1]))])
    channel, stub = peer_stub(cluster, target, cluster.peer_credentials("client"))
    with channel:
        calls = (
            (stub.Propose, replication_pb2.ProposeRequest(
                client_id="c", seq=1, batch=enqueue.SerializeToString(), cluster_id=ours)),
            (stub.Stream, iter([replication_pb2.PeerBatch(sender=2, cluster_id=ours)])),
            (stub.WatchHealth, replication_pb2.HealthRequest()),
        )
        for call, request in calls:
            error = rpc_error(call, request, timeout=10)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
            assert "not client" in error.details(), error.details()


def test_the_gateway_certificate_may_not_stream_nor_propose_more_than_enqueue(cluster):
    target = cluster.wait_leader(60)
    ours = cluster.cluster_id(target)
    channel, stub = peer_stub(cluster, target, cluster.peer_credentials("gateway"))
    with channel:
        error = rpc_error(stub.Stream, iter([replication_pb2.PeerBatch(sender=2,
                                                                       cluster_id=ours)]),
                          timeout=10)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "for node certificates, not gateway" in error.details()
        # Even with the cluster id (which a gateway is never given), only Enqueue.
        for cluster_field in ("", ours):
            ack = log_pb2.CommandBatch(commands=[log_pb2.Command(ack=log_pb2.AckCommand(
                jobs=[queue_pb2.JobRef(job_id=1, attempt=1)]))])
            error = rpc_error(stub.Propose, replication_pb2.ProposeRequest(
                client_id=f"g-{secrets.token_hex(4)}", seq=1, batch=ack.SerializeToString(),
                cluster_id=cluster_field), timeout=10)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
            assert "only enqueue" in error.details()


def test_a_node_certificate_cannot_speak_for_another_node(cluster):
    target = 1
    leader = cluster.wait_leader(60)
    ours = cluster.cluster_id(target)
    before = cluster.report(target).counters["peers.refused_batches"]
    forged_round = 2**41
    prepare = replication_pb2.PaxosMessage(src=3, dst=target, prepare=replication_pb2.Prepare(
        ballot=replication_pb2.Ballot(round=forged_round, node=3)))
    channel, stub = peer_stub(cluster, target, cluster.peer_credentials("node-2"))
    with channel:
        for batch in (replication_pb2.PeerBatch(sender=3, cluster_id=ours),  # a hello
                      replication_pb2.PeerBatch(messages=[prepare], sender=3, cluster_id=ours)):
            error = rpc_error(stub.Stream, iter([batch]), timeout=10)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
            assert "node 3" in error.details() and "node 2" in error.details(), error.details()
        # A proposal with node 2's certificate but no cluster id is a gateway's: enqueue only.
        ack = log_pb2.CommandBatch(commands=[log_pb2.Command(ack=log_pb2.AckCommand(
            jobs=[queue_pb2.JobRef(job_id=1, attempt=1)]))])
        error = rpc_error(stub.Propose, replication_pb2.ProposeRequest(
            client_id="n2-forged", seq=1, batch=ack.SerializeToString()), timeout=10)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "only enqueue" in \
            error.details()
    assert cluster.report(target).counters["peers.refused_batches"] >= before + 2
    # Nothing was accepted: no node took the forged ballot and the leadership stands.
    assert all(str(forged_round) not in b for b in ballots(cluster))
    assert cluster.wait_leader(30) == leader
    text = cluster.log_path(target).read_text(errors="replace")
    assert "certificate of node 2" in text, text[-3000:]


# ------------------------------------------------------------ start errors

def test_bad_tls_material_stops_node_and_gateway_at_start_with_one_line(tmp_path):
    folder = tmp_path / "tls"
    certs.init(folder, 3)
    os.unlink(folder / "node-3-key.pem")
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    ports = free_ports(4)
    peers = ",".join(f"{i}=127.0.0.1:{ports[i]}" for i in (1, 2, 3))
    node = subprocess.run(
        [sys.executable, "-m", "dpq.node", "--id", "3", "--listen", f"127.0.0.1:{ports[0]}",
         "--peer-listen", f"127.0.0.1:{ports[3]}", "--peers", peers, "--data-dir",
         str(tmp_path / "n3"), "--dsn", "postgresql://127.0.0.1:1/none", "--tls-dir", str(folder)],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path, check=False)
    assert node.returncode == 2, node.stderr
    assert node.stderr.strip().count("\n") == 0 and "node-3-key.pem" in node.stderr, node.stderr
    gateway = subprocess.run(
        [sys.executable, "-m", "dpq.gateway", "--listen", f"127.0.0.1:{ports[0]}",
         "--nodes", f"127.0.0.1:{ports[1]}", "--tls-dir", str(folder), "--insecure"],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path, check=False)
    assert gateway.returncode == 2 and "not both" in gateway.stderr, gateway.stderr
    os.unlink(folder / "gateway.pem")
    gateway = subprocess.run(
        [sys.executable, "-m", "dpq.gateway", "--listen", f"127.0.0.1:{ports[0]}",
         "--nodes", f"127.0.0.1:{ports[1]}", "--tls-dir", str(folder)],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path, check=False)
    assert gateway.returncode == 2 and "gateway.pem" in gateway.stderr, gateway.stderr
    assert gateway.stderr.strip().count("\n") == 0


# ------------------------------------------------------------------ dpq up

def test_the_cli_looks_for_dpq_up_material_unless_a_plaintext_dpq_up_left_a_marker(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DPQ_TLS_DIR", raising=False)
    assert commands.tls_dir_for(None) is None
    made = up._tls_material("dpq-data", 3, tls=True)
    assert made == str(tmp_path / "dpq-data" / "tls")
    ca = (tmp_path / "dpq-data" / "tls" / "ca.pem").read_bytes()
    assert commands.tls_dir_for(None) == commands.UP_TLS_DIR
    assert up._tls_material("dpq-data", 3, tls=False) is None  # a plaintext dpq up
    assert (tmp_path / "dpq-data" / commands.TLS_OFF_FILE).exists()
    assert commands.tls_dir_for(None) is None
    assert commands.tls_dir_for("elsewhere") == "elsewhere"  # a flag still wins
    monkeypatch.setenv("DPQ_TLS_DIR", "from-env")
    assert commands.tls_dir_for(None) == "from-env"
    monkeypatch.delenv("DPQ_TLS_DIR")
    up._tls_material("dpq-data", 5, tls=True)  # --tls again: same CA, marker gone
    assert (tmp_path / "dpq-data" / "tls" / "ca.pem").read_bytes() == ca
    assert (tmp_path / "dpq-data" / "tls" / "node-5.pem").exists()
    assert not (tmp_path / "dpq-data" / commands.TLS_OFF_FILE).exists()
    assert commands.tls_dir_for(None) == commands.UP_TLS_DIR


class _Up:
    """`dpq up` run in ``cwd`` with ``--data-dir dpq-data``, as a user would."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str) -> None:
        self.base = free_port_base()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dpq.cli", "up", "--port-base", str(self.base), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_up(self) -> None:
        wait_until(lambda: any("Ctrl-C stops everything" in line for line in self.lines) or
                   self.proc.poll() is not None, 120, "dpq up to report the cluster up")
        assert self.proc.poll() is None, "\n".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture
def up_folder():
    """A folder of its own under the system temp dir, not under pytest's: the
    embedded PostgreSQL runs as another user and must traverse the path, and a
    pytest session starting meanwhile (another one on the machine) makes
    /tmp/pytest-of-<user> private again, which would fail the restart below."""
    folder = Path(tempfile.mkdtemp(prefix="dpq-up-tls-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_dpq_up_tls_serves_the_cli_with_the_material_found_in_its_data_folder(up_folder):
    tmp_path = up_folder
    env = {k: v for k, v in os.environ.items() if k not in ("DPQ_TLS_DIR", "DPQ_ADDR")}
    env["PYTHONPATH"] = PACKAGE_ROOT

    def dpq(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dpq.cli", *args], capture_output=True,
                              text=True, env={**env, **extra}, timeout=90, cwd=tmp_path,
                              check=False)

    folder = tmp_path / "dpq-data" / "tls"
    running = _Up(tmp_path, env, "--tls")
    try:
        running.wait_up()
        target = f"127.0.0.1:{running.base}"
        banner = "\n".join(running.lines)
        assert "TLS: on" in banner and str(folder) in banner, banner
        assert "find it" in banner and "plaintext" not in banner, banner
        for name in ("ca.pem", "node-1.pem", "node-3-key.pem", "gateway.pem", "token"):
            assert (folder / name).exists(), name
        enq = dpq("enqueue", "--target", target, "--priority", "1", "over tls")
        assert enq.returncode == 0, enq.stderr
        plain = dpq("enqueue", "--target", target, "refused", DPQ_TLS_DIR="")
        assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr, plain.stderr
        got = dpq("consume", "--target", target, "--count", "1", "--wait", "5s")
        assert got.returncode == 0 and "over tls" in got.stdout, (got.stdout, got.stderr)
        assert "refused" not in got.stdout
        assert running.stop() == 0
    finally:
        running.stop()

    # The same folder without --tls: plaintext, and the CLI does not try TLS against it.
    ca = (folder / "ca.pem").read_bytes()
    running = _Up(tmp_path, env)
    try:
        running.wait_up()
        target = f"127.0.0.1:{running.base}"
        assert any(line.strip().startswith("plaintext:") for line in running.lines)
        assert (tmp_path / "dpq-data" / commands.TLS_OFF_FILE).exists()
        enq = dpq("enqueue", "--target", target, "--priority", "2", "plain again")
        assert enq.returncode == 0, enq.stderr
        assert running.stop() == 0
    finally:
        running.stop()
    assert (folder / "ca.pem").read_bytes() == ca  # kept for the next `dpq up --tls`
