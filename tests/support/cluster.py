"""Real ``dpq-node`` (and ``dpq-gateway``) processes on loopback, for the tests.

A thin layer over :class:`dpq.localcluster.LocalCluster` (what ``dpq up``
runs): free ports for both planes (client and peer), a given DSN, client stubs,
and waits that poll with a deadline instead of sleeping blindly. The nodes run
``--insecure`` unless ``args`` brings TLS flags.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import grpc

from dpq.localcluster import LocalCluster
from dpq.v1 import queue_pb2, queue_pb2_grpc, replication_pb2, replication_pb2_grpc


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


class Cluster(LocalCluster):
    def __init__(self, root: Path, dsn: str, nodes: int = 3, args: tuple[str, ...] = (),
                 cpus: dict[int, set[int]] | None = None) -> None:
        """``crossed[i]``, when set, is the ``--peers`` node ``i`` starts with (a test that
        points one cluster's node at another cluster's ports)."""
        ports = free_ports(2 * nodes + 1)  # gateway + client ports, then peer ports
        super().__init__(root, nodes=nodes, dsn=dsn, node_args=args, ports=ports[:nodes + 1],
                         peer_ports=ports[nodes + 1:], cpus=cpus)
        self._channels: dict[object, grpc.Channel] = {}
        self.crossed: dict[int, str] = {}

    def peers_of(self, node_id: int) -> str:
        return self.crossed.get(node_id, self.peers)

    def start(self, node_id: int | None = None) -> None:
        """Start the nodes (all, or one); the gateway only on ``start_gateway``."""
        for i in [node_id] if node_id is not None else self.ids:
            self.start_node(i)

    def stop(self, node_id: int, sig: int = signal.SIGTERM, timeout_s: float = 15) -> None:
        self.stop_node(node_id, sig, timeout_s)
        for key in (node_id, ("peer", node_id)):
            channel = self._channels.pop(key, None)
            if channel is not None:
                channel.close()

    def kill(self, node_id: int) -> None:
        self.stop(node_id, signal.SIGKILL)

    def stop_all(self) -> None:
        LocalCluster.stop(self)

    def _channel(self, key: object, address: str) -> grpc.Channel:
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = grpc.insecure_channel(address)
        return channel

    def stub(self, node_id: int) -> queue_pb2_grpc.QueueStub:
        return queue_pb2_grpc.QueueStub(self._channel(node_id, self.addresses[node_id]))

    def replication_stub(self, node_id: int) -> replication_pb2_grpc.ReplicationStub:
        """Node ``node_id``'s peer port."""
        return replication_pb2_grpc.ReplicationStub(
            self._channel(("peer", node_id), self.peer_addresses[node_id]))

    def report(self, node_id: int) -> replication_pb2.NodeHealthReport:
        """Node ``node_id``'s next health report (its counters), from its peer port."""
        call = self.replication_stub(node_id).WatchHealth(replication_pb2.HealthRequest(),
                                                          timeout=5)
        try:
            return next(call)
        finally:
            call.cancel()

    def gateway_stub(self) -> queue_pb2_grpc.QueueStub:
        return queue_pb2_grpc.QueueStub(self._channel("gateway", self.gateway_address))

    def info(self, node_id: int) -> queue_pb2.ClusterInfoResponse:
        return self.stub(node_id).ClusterInfo(queue_pb2.ClusterInfoRequest(), timeout=2)

    def gateway_info(self) -> queue_pb2.ClusterInfoResponse:
        return self.gateway_stub().ClusterInfo(queue_pb2.ClusterInfoRequest(), timeout=5)

    def wait_leader(self, timeout_s: float = 20, among: list[int] | None = None) -> int:
        """The leader every running node agrees on."""
        nodes = among or list(self.procs)

        def agreed():
            leaders = {self.info(i).leader_id for i in nodes}
            leader = leaders.pop() if len(leaders) == 1 else 0
            return leader if leader in nodes else 0

        return wait_until(agreed, timeout_s, f"one leader among nodes {nodes}")

    def log_tail(self, which: int | str, lines: int = 40) -> str:
        path = self.log_path(which)
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
        for channel in self._channels.values():
            channel.close()
