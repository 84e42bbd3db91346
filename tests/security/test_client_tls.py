"""The client library and the CLI over TLS with the bearer token.

The server is a real ``dpq.v1.Queue`` gRPC server (``dpq.services.queue.QueueServicer``)
on 127.0.0.1 with TLS and :class:`~dpq.security.auth.TokenInterceptor`; only the
queue *operations* behind it are a small in-memory stand-in for a node, so the
client's gRPC, TLS and token are exercised for real. A recording interceptor in
front shows the ``authorization`` header each call arrived with.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import time
from collections.abc import Sequence

import grpc
import pytest

from dpq import cli
from dpq.client import (
    AsyncConsumer,
    AsyncProducer,
    Consumer,
    Producer,
    RetryPolicy,
    TlsError,
    UnauthenticatedError,
    UnavailableError,
)
from dpq.security.auth import MISSING_TOKEN, WRONG_TOKEN, TokenInterceptor
from dpq.security.tls import TlsMaterial, server_credentials
from dpq.services.queue import QueueServicer
from dpq.v1 import queue_pb2, queue_pb2_grpc

QUICK = RetryPolicy(max_attempts=3, deadline=5.0, initial_backoff=0.01, max_backoff=0.05)


class MemoryQueue:
    """The operations of a one-node cluster, in memory: enough for a producer and a
    consumer (FIFO, no priorities, no lease expiry)."""

    def __init__(self) -> None:
        self.address = ""
        self.ready: list[queue_pb2.Job] = []
        self.leased: dict[int, queue_pb2.Job] = {}
        self.acked: list[int] = []
        self._next_id = 1
        self._arrived: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._arrived is None:  # made on the server's loop
            self._arrived = asyncio.Event()
        return self._arrived

    async def enqueue(self, jobs: Sequence[queue_pb2.NewJob]) -> list[int]:
        ids = []
        for new in jobs:
            ids.append(self._next_id)
            self.ready.append(queue_pb2.Job(job_id=self._next_id, queue=new.queue,
                                            priority=new.priority, payload=new.payload,
                                            attempt=1))
            self._next_id += 1
        self._event().set()
        return ids

    async def dequeue(self, request: queue_pb2.DequeueRequest) -> list[queue_pb2.Job]:
        deadline = time.monotonic() + request.wait_ms / 1000
        while True:
            mine = [j for j in self.ready if j.queue == request.queue][:request.max_jobs]
            if mine or time.monotonic() >= deadline:
                break
            self._event().clear()
            try:
                await asyncio.wait_for(self._event().wait(), deadline - time.monotonic())
            except TimeoutError:
                pass
        expires = int((time.time() + request.lease_ms / 1000) * 1e6)
        for job in mine:
            self.ready.remove(job)
            job.lease_expires_at_us = expires
            self.leased[job.job_id] = job
        return mine

    async def ack(self, refs: Sequence[queue_pb2.JobRef]) -> list[str]:
        errors = []
        for ref in refs:
            if self.leased.pop(ref.job_id, None) is None:
                errors.append("not_found")
            else:
                self.acked.append(ref.job_id)
                errors.append("")
        return errors

    async def nack(self, refs: Sequence[queue_pb2.JobRef], delay_ms: int) -> list[str]:
        for ref in refs:
            job = self.leased.pop(ref.job_id, None)
            if job is not None:
                self.ready.append(job)
        return [""] * len(refs)

    async def extend(self, refs: Sequence[queue_pb2.JobRef], lease_ms: int) -> list[str]:
        return ["" if ref.job_id in self.leased else "lease_lost" for ref in refs]

    async def stats(self, queue: str, include_idle: bool = False) -> list[queue_pb2.QueueStats]:
        names = sorted({j.queue for j in self.ready} | {j.queue for j in self.leased.values()})
        return [queue_pb2.QueueStats(
            queue=name, ready_by_priority=[sum(j.queue == name for j in self.ready), 0, 0, 0, 0],
            leased=sum(j.queue == name for j in self.leased.values()))
            for name in names if not queue or name == queue]

    async def cluster_info(self) -> queue_pb2.ClusterInfoResponse:
        return queue_pb2.ClusterInfoResponse(leader_id=1, served_by="node 1", nodes=[
            queue_pb2.NodeInfo(node_id=1, address=self.address, role="leader", reachable=True)])


class HeaderRecorder(grpc.aio.ServerInterceptor):
    """Notes (method name, authorization header or None) of every call."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def intercept_service(self, continuation, details):
        auth = dict(details.invocation_metadata or ()).get("authorization")
        self.seen.append((details.method.rpartition("/")[2], auth))
        return await continuation(details)


@pytest.fixture
def node(serve, tls_dir):
    """A TLS + token Queue server: (address, operations, recorder, token)."""
    ops = MemoryQueue()
    recorder = HeaderRecorder()
    material = TlsMaterial.from_dir(tls_dir, "node", 1)
    address = serve(lambda s: queue_pb2_grpc.add_QueueServicer_to_server(QueueServicer(ops), s),
                    server_credentials(material, require_client_cert=False),
                    [recorder, TokenInterceptor(material.token)])
    ops.address = address
    return address, ops, recorder, material.token


def test_producer_and_consumer_with_a_tls_dir(node, tls_dir):
    address, ops, recorder, token = node
    with Producer(address, tls_dir=tls_dir) as producer:
        ids = producer.enqueue_many([b"one", b"two"])
    assert ids == [1, 2]
    with Consumer(address, tls_dir=tls_dir, wait=1.0, max_jobs=2) as consumer:
        jobs = [consumer.receive(timeout=20), consumer.receive(timeout=20)]
        assert [j.payload for j in jobs if j is not None] == [b"one", b"two"]
        for job in jobs:
            job.ack()
    assert ops.acked == [1, 2]
    methods = {method for method, _ in recorder.seen}
    assert {"Enqueue", "ClusterInfo", "Dequeue", "Ack"} <= methods
    assert {auth for _, auth in recorder.seen} == {f"Bearer {token}"}


def test_async_clients_with_explicit_ca_and_token(node, tls_dir):
    address, ops, recorder, token = node
    with open(os.path.join(tls_dir, "ca.pem"), "rb") as f:
        ca = f.read()

    async def main() -> tuple[int, bytes]:
        async with AsyncProducer(address, root_certificates=ca, token=token,
                                 batching=True) as producer:
            job_id = await producer.enqueue(b"async")
        async with AsyncConsumer(address, root_certificates=ca, token=token,
                                 wait=1.0) as consumer:
            job = await consumer.receive(timeout=20)
            assert job is not None
            await job.ack()
            return job_id, job.payload

    assert asyncio.run(main()) == (1, b"async")
    assert ops.acked == [1]
    assert "EnqueueStream" in {method for method, _ in recorder.seen}
    assert {auth for _, auth in recorder.seen} == {f"Bearer {token}"}


def test_dpq_tls_dir_is_the_default(node, tls_dir, monkeypatch):
    address, _, recorder, token = node
    monkeypatch.setenv("DPQ_TLS_DIR", tls_dir)
    with Producer(address) as producer:
        assert producer.enqueue(b"env") == 1
    assert recorder.seen == [("Enqueue", f"Bearer {token}")]


def test_without_the_right_token_the_client_is_refused(node, tls_dir):
    address, ops, recorder, _ = node
    ca = os.path.join(tls_dir, "ca.pem")
    with Producer(address, root_certificates=ca, retry=QUICK) as producer:
        with pytest.raises(UnauthenticatedError, match=MISSING_TOKEN) as caught:
            producer.enqueue(b"no token")
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    with (Producer(address, root_certificates=ca, token="not-the-token", retry=QUICK) as producer,
          pytest.raises(UnauthenticatedError, match=WRONG_TOKEN)):
        producer.enqueue(b"wrong token")
    with (Consumer(address, root_certificates=ca, wait=1.0, retry=QUICK) as consumer,
          pytest.raises(UnauthenticatedError, match=MISSING_TOKEN)):
        consumer.receive(timeout=20)
    assert recorder.seen[0] == ("Enqueue", None)
    assert ops.ready == [] and ops.acked == []


def test_plaintext_or_another_ca_does_not_connect(node, other_dir, monkeypatch):
    address, ops, recorder, _ = node
    monkeypatch.delenv("DPQ_TLS_DIR", raising=False)
    with Producer(address, retry=QUICK) as producer, pytest.raises(UnavailableError):
        producer.enqueue(b"plaintext")
    with (Producer(address, tls_dir=other_dir, retry=QUICK) as producer,
          pytest.raises(UnavailableError)):
        producer.enqueue(b"other CA")
    assert recorder.seen == [] and ops.ready == []
    with pytest.raises(TlsError, match=r"TLS folder .*missing does not exist"):
        Producer(address, tls_dir=os.path.join(other_dir, "missing"))


# --------------------------------------------------------------------------- CLI

def test_cli_with_tls_dir(node, tls_dir, capsys, monkeypatch, tmp_path):
    address, ops, recorder, token = node
    monkeypatch.delenv("DPQ_TLS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./dpq-data here
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["enqueue", "--target", address, "--tls-dir", tls_dir, "--queue", "q",
                     "hello"]) == 0
    assert capsys.readouterr().out == "1\n"
    assert cli.main(["stats", "--target", address, "--tls-dir", tls_dir]) == 0
    assert "q " in capsys.readouterr().out
    assert cli.main(["status", "--target", address, "--tls-dir", tls_dir]) == 0
    assert "leader: node 1" in capsys.readouterr().out
    assert cli.main(["consume", "--target", address, "--tls-dir", tls_dir, "--queue", "q",
                     "--count", "1", "--wait", "1s"]) == 0
    assert capsys.readouterr().out.split("\t")[-1] == "hello\n"
    assert ops.acked == [1]
    assert {auth for _, auth in recorder.seen} == {f"Bearer {token}"}


def test_cli_finds_dpq_up_material_or_says_what_is_wrong(node, tls_dir, capsys, monkeypatch,
                                                         tmp_path):
    address, _, recorder, token = node
    monkeypatch.delenv("DPQ_TLS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    # plaintext to a TLS port: one line that says it tried plaintext
    assert cli.main(["stats", "--target", address]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dpq stats: ") and "in plaintext" in err and err.count("\n") == 1
    # a folder that does not exist
    assert cli.main(["status", "--target", address, "--tls-dir", "nope"]) == 1
    assert "TLS folder nope does not exist" in capsys.readouterr().err
    # CA but no token: refused, and told how to fix it
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(os.path.join(tls_dir, "ca.pem"), partial / "ca.pem")
    (partial / "token").write_text("not-the-token\n")
    assert cli.main(["status", "--target", address, "--tls-dir", str(partial)]) == 1
    assert "wrong bearer token" in capsys.readouterr().err
    # what `dpq up --tls` leaves in ./dpq-data/tls is found without a flag
    shutil.copytree(tls_dir, tmp_path / "dpq-data" / "tls")
    assert cli.main(["status", "--target", address]) == 0
    assert "leader: node 1" in capsys.readouterr().out
    # and DPQ_TLS_DIR="" means plaintext even then
    monkeypatch.setenv("DPQ_TLS_DIR", "")
    assert cli.main(["status", "--target", address]) == 1
    assert "in plaintext" in capsys.readouterr().err
    assert recorder.seen.count(("ClusterInfo", f"Bearer {token}")) == 1
