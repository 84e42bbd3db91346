"""Real ``dpq-node`` (and ``dpq-gateway``) processes on loopback, for the tests.

A thin layer over :class:`dpq.cli.localcluster.LocalCluster` (what ``dpq up``
runs): free ports for both planes (client and peer), a given DSN, client stubs,
and waits that poll with a deadline instead of sleeping blindly. The nodes run
``--insecure`` unless ``tls=True`` (material for every node, the gateway and
the clients made in ``root/tls``; nodes and gateway get ``--tls-dir``; the stubs
speak TLS with the token, and the peer-port stubs present the gateway
certificate) or ``args`` brings TLS flags.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from typing import Self

import grpc

from dpq.cli.localcluster import LocalCluster
from dpq.security import certs
from dpq.v1 import queue_pb2, queue_pb2_grpc, replication_pb2, replication_pb2_grpc

#: Ports already handed out in this test session: a port closed again after the
#: probe is free to the kernel, and two clusters made before either starts (e.g.
#: crossed with each other) must not be given the same one.
_HANDED_OUT: set[int] = set()


def free_ports(n: int) -> list[int]:
    """``n`` loopback ports free now and never handed out before in this session."""
    socks, ports = [], []
    while len(ports) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)  # held until all are chosen: the kernel gives each once
        port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            ports.append(port)
            _HANDED_OUT.add(port)
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
                 cpus: dict[int, set[int]] | None = None, tls: bool = False,
                 http_listen: str | None = None, metrics: bool = False) -> None:
        """``crossed[i]``, when set, is the ``--peers`` node ``i`` starts with (a test that
        points one cluster's node at another cluster's ports). ``http_listen``: the
        gateway's web console. ``metrics``: every process serves GET /metrics on a free
        port (``metrics_addresses``)."""
        ports = free_ports(2 * nodes + 1)  # gateway + client ports, then peer ports
        tls_dir = None
        if tls:
            tls_dir = Path(root) / "tls"
            certs.ensure(tls_dir, nodes)
        super().__init__(root, nodes=nodes, dsn=dsn, node_args=args, ports=ports[:nodes + 1],
                         peer_ports=ports[nodes + 1:], cpus=cpus, tls_dir=tls_dir,
                         http_listen=http_listen,
                         metrics_ports=free_ports(nodes + 1) if metrics else None)
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
            channel = self._channels[key] = self.client_channel(address)
        return channel

    def peer_credentials(self, holder: str = "gateway") -> grpc.ChannelCredentials | None:
        """Mutual TLS to a peer port with ``holder``'s certificate (``"gateway"``,
        ``"client"``, ``"node-2"``, ...) from ``root/tls``; None in plaintext."""
        if self.tls_dir is None:
            return None
        from dpq.security.identity import Identity
        from dpq.security.tls import TlsMaterial, peer_channel_credentials

        role, _, node = holder.partition("-")
        who, folder = Identity(role, int(node) if node else None), Path(self.tls_dir)
        return peer_channel_credentials(TlsMaterial.from_files(
            folder / certs.cert_file(who), folder / certs.key_file(who), folder / certs.CA_FILE))

    def peer_channel(self, node_id: int, holder: str = "gateway") -> grpc.Channel:
        """A new blocking channel to node ``node_id``'s peer port (the caller closes it)."""
        credentials = self.peer_credentials(holder)
        address = self.peer_addresses[node_id]
        return (grpc.insecure_channel(address) if credentials is None
                else grpc.secure_channel(address, credentials))

    def stub(self, node_id: int) -> queue_pb2_grpc.QueueStub:
        return queue_pb2_grpc.QueueStub(self._channel(node_id, self.addresses[node_id]))

    def replication_stub(self, node_id: int) -> replication_pb2_grpc.ReplicationStub:
        """Node ``node_id``'s peer port (with TLS: as the gateway)."""
        key = ("peer", node_id)
        if key not in self._channels:
            self._channels[key] = self.peer_channel(node_id)
        return replication_pb2_grpc.ReplicationStub(self._channels[key])

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

    def start_gateway_and_wait(self, timeout_s: float = 90) -> None:
        """Start the gateway and wait until it sees a leader and every node; on
        failure print every process's log tail before raising."""
        self.start_gateway()
        try:
            self.wait_ready(timeout_s)
        except Exception:
            for i in self.ids:
                print(f"--- node {i}\n{self.log_tail(i)}")
            print(f"--- gateway\n{self.log_tail('gateway')}")
            raise

    def cluster_id(self, node_id: int = 1) -> str:
        """The cluster id in node ``node_id``'s data folder (what an insider could read)."""
        with open(self.root / f"n{node_id}" / "identity.json") as f:
            return json.load(f)["cluster_id"]

    def log_tail(self, which: int | str, lines: int = 40) -> str:
        path = self.log_path(which)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
        for channel in self._channels.values():
            channel.close()
