"""Real ``dpq-node`` processes on loopback, for the integration tests.

Each node is a separate process (``python -m dpq.node``, the same entry point
as the ``dpq-node`` script) importing the same dpq the tests import. Every
wait is polling with a deadline, never a bare sleep.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc

import dpq
from dpq.v1 import queue_pb2, queue_pb2_grpc

PACKAGE_ROOT = str(Path(dpq.__file__).resolve().parent.parent)


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except grpc.RpcError as exc:
            value, last = None, exc
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last error: {last})")


class Cluster:
    def __init__(self, root: Path, dsn: str, nodes: int = 3, args: tuple[str, ...] = (),
                 cpus: dict[int, set[int]] | None = None) -> None:
        self.root = root
        self.dsn = dsn
        self.ids = list(range(1, nodes + 1))
        ports = free_ports(nodes + 1)
        self.addresses = {i: f"127.0.0.1:{p}" for i, p in zip(self.ids, ports)}
        self.gateway_address = f"127.0.0.1:{ports[-1]}"
        self.args = args
        self.cpus = cpus or {}
        self.procs: dict[int, subprocess.Popen] = {}
        self.gateway: subprocess.Popen | None = None
        self._channels: dict[object, grpc.Channel] = {}

    @property
    def peers(self) -> str:
        return ",".join(f"{i}={a}" for i, a in self.addresses.items())

    def start(self, node_id: int | None = None) -> None:
        for i in [node_id] if node_id is not None else self.ids:
            data = self.root / f"n{i}"
            data.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "dpq.node", "--id", str(i), "--listen", self.addresses[i],
                   "--peers", self.peers, "--data-dir", str(data), "--dsn", self.dsn, *self.args]
            self.procs[i] = self._spawn(cmd, data, self.cpus.get(i))

    def _spawn(self, cmd: list[str], data: Path, cpus: set[int] | None) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
        with open(data / "stderr.log", "ab") as log:
            return subprocess.Popen(
                cmd, cwd=data, env=env, stdout=log, stderr=log,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)

    def start_gateway(self, *args: str) -> None:
        data = self.root / "gateway"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "dpq.gateway", "--listen", self.gateway_address,
               "--nodes", ",".join(self.addresses.values()), "--log-dir", str(data), *args]
        self.gateway = self._spawn(cmd, data, None)

    def gateway_stub(self) -> queue_pb2_grpc.QueueStub:
        channel = self._channels.get("gateway")
        if channel is None:
            channel = self._channels["gateway"] = grpc.insecure_channel(self.gateway_address)
        return queue_pb2_grpc.QueueStub(channel)

    def gateway_info(self) -> queue_pb2.ClusterInfoResponse:
        return self.gateway_stub().ClusterInfo(queue_pb2.ClusterInfoRequest(), timeout=5)

    def stop(self, node_id: int, sig: int = signal.SIGTERM, timeout_s: float = 15) -> None:
        proc = self.procs.pop(node_id)
        proc.send_signal(sig)
        proc.wait(timeout_s)
        channel = self._channels.pop(node_id, None)
        if channel is not None:
            channel.close()

    def kill(self, node_id: int) -> None:
        self.stop(node_id, signal.SIGKILL)

    def stop_all(self) -> None:
        if self.gateway is not None:
            self.gateway.terminate()
            try:
                self.gateway.wait(15)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
            self.gateway = None
        for i in list(self.procs):
            try:
                self.stop(i)
            except subprocess.TimeoutExpired:
                self.kill(i)

    def stub(self, node_id: int) -> queue_pb2_grpc.QueueStub:
        channel = self._channels.get(node_id)
        if channel is None:
            channel = self._channels[node_id] = grpc.insecure_channel(self.addresses[node_id])
        return queue_pb2_grpc.QueueStub(channel)

    def info(self, node_id: int) -> queue_pb2.ClusterInfoResponse:
        return self.stub(node_id).ClusterInfo(queue_pb2.ClusterInfoRequest(), timeout=2)

    def wait_leader(self, timeout_s: float = 20, among: list[int] | None = None) -> int:
        """The leader every running node agrees on."""
        nodes = among or list(self.procs)

        def agreed():
            leaders = {self.info(i).leader_id for i in nodes}
            leader = leaders.pop() if len(leaders) == 1 else 0
            return leader if leader in nodes else 0

        return wait_until(agreed, timeout_s, f"one leader among nodes {nodes}")

    def log_tail(self, node_id: int | str, lines: int = 40) -> str:
        path = self.root / (f"n{node_id}" if isinstance(node_id, int) else node_id) / "stderr.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
        for channel in self._channels.values():
            channel.close()
