"""A whole cluster on one machine: N ``dpq-node`` processes and a ``dpq-gateway``.

This is what ``dpq up`` runs, what ``bench/e2e.py`` measures and what the
integration tests start. Every process is a real one (``python -m dpq.node``
is the ``dpq-node`` entry point) with its own data folder under ``root``;
PostgreSQL is the embedded server in ``root/postgres`` unless a DSN is given.
Ports: the gateway on ``port_base``, node *i*'s client port on ``port_base + i``
and its peer port on ``port_base + 10 + i`` (``PEER_PORT_OFFSET``); with
``metrics_ports`` (``dpq up``: :func:`metrics_ports`, ``port_base + 2000``, so
9100 for the gateway and 9101-9103 for the nodes by default) every process
also serves Prometheus metrics (``--metrics-listen``).
:meth:`LocalCluster.listen_addresses` lists them all.

The nodes run with ``--insecure`` (plaintext, no TLS) unless ``tls_dir`` is
given (a ``dpq certs init`` folder: nodes and gateway get ``--tls-dir``, and the
readiness probe speaks TLS with the clients' token) or ``node_args`` carries
TLS flags: on loopback only.

Everything it starts stops with it, however this process ends: see
``dpq.lifeline`` (a parent-death signal on each child, and a watchdog process
for them and the embedded PostgreSQL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Self

import grpc

import dpq
from dpq import lifeline
from dpq.services import ports as port_probe
from dpq.settings import DEFAULT_PORT_BASE
from dpq.v1 import queue_pb2, queue_pb2_grpc

#: Child processes import the dpq this process imported (a checkout or site-packages).
PACKAGE_ROOT = str(Path(dpq.__file__).resolve().parent.parent)
#: Node i's peer port is its client port plus this (with the default port layout).
PEER_PORT_OFFSET = 10
#: The metrics ports of `dpq up` are the client ports plus this (the gateway's 9100).
METRICS_PORT_OFFSET = 2000
#: Node flags that bring TLS material; without any, the nodes run --insecure.
TLS_FLAGS = ("--tls-dir", "--tls-cert", "--tls-key", "--tls-ca", "--token-file")


def metrics_ports(port_base: int, nodes: int) -> list[int]:
    """The gateway's then each node's metrics port, from the port base (``dpq up``)."""
    return [port_base + METRICS_PORT_OFFSET + i for i in range(nodes + 1)]


class ClusterError(RuntimeError):
    """The cluster did not come up; the message says what is missing and where the logs are."""


class LocalCluster:
    def __init__(self, root: str | os.PathLike[str], *, nodes: int = 3,
                 port_base: int = DEFAULT_PORT_BASE,
                 host: str = "127.0.0.1", dsn: str | None = None,
                 node_args: tuple[str, ...] = (), gateway_args: tuple[str, ...] = (),
                 ports: list[int] | None = None, peer_ports: list[int] | None = None,
                 cpus: dict[int, set[int]] | None = None,
                 tls_dir: str | os.PathLike[str] | None = None,
                 http_listen: str | None = None,
                 metrics_ports: list[int] | None = None) -> None:
        """``ports``: the gateway's then each node's client port; ``peer_ports``: each
        node's peer port (both default to the layout above, from ``port_base``).
        ``tls_dir``: TLS material for every process (see the module docstring).
        ``http_listen``: the gateway's web console (``--http-listen``); None: none.
        ``metrics_ports``: the gateway's then each node's metrics port (None: no metrics)."""
        self.root = Path(root).resolve()
        self.ids = list(range(1, nodes + 1))
        ports = ports or [port_base + i for i in range(nodes + 1)]
        peer_ports = peer_ports or [port_base + PEER_PORT_OFFSET + i for i in self.ids]
        if len(ports) != nodes + 1 or len(peer_ports) != nodes:
            raise ValueError(f"{nodes} nodes need {nodes + 1} ports and {nodes} peer ports")
        self.gateway_address = f"{host}:{ports[0]}"
        #: Each node's client address (Queue) and peer address (Replication).
        self.addresses = {i: f"{host}:{ports[i]}" for i in self.ids}
        self.peer_addresses = {i: f"{host}:{peer_ports[i - 1]}" for i in self.ids}
        if metrics_ports is not None and len(metrics_ports) != nodes + 1:
            raise ValueError(f"{nodes} nodes need {nodes + 1} metrics ports")
        #: Where the gateway and each node serve GET /metrics (None / {}: they do not).
        self.gateway_metrics_address = (f"{host}:{metrics_ports[0]}"
                                        if metrics_ports is not None else None)
        self.metrics_addresses = ({i: f"{host}:{metrics_ports[i]}" for i in self.ids}
                                  if metrics_ports is not None else {})
        self.dsn = dsn
        self.tls_dir = str(Path(tls_dir).resolve()) if tls_dir is not None else None
        tls_args = ("--tls-dir", self.tls_dir) if self.tls_dir is not None else ()
        self.node_args = (*tls_args, *node_args)
        #: The web console's address, if the gateway serves one.
        self.http_listen = http_listen
        http_args = ("--http-listen", http_listen) if http_listen is not None else ()
        self.gateway_args = (*tls_args, *http_args, *gateway_args)
        self.cpus = cpus or {}
        self.procs: dict[int, subprocess.Popen] = {}
        self.gateway: subprocess.Popen | None = None
        self._postgres = None
        self._lifeline: lifeline.Lifeline | None = None

    # --------------------------------------------------------------- processes

    @property
    def peers(self) -> str:
        return ",".join(f"{i}={a}" for i, a in self.peer_addresses.items())

    def peers_of(self, node_id: int) -> str:
        """The ``--peers`` node ``node_id`` is started with (tests may cross them)."""
        return self.peers

    @property
    def insecure(self) -> bool:
        """Plaintext planes: no TLS flag among ``node_args``."""
        return not any(arg.split("=")[0] in TLS_FLAGS for arg in self.node_args)

    def listen_addresses(self) -> dict[str, str]:
        """Every address a process of this cluster listens on, by what listens there."""
        listen = {"gateway": self.gateway_address}
        if self.http_listen is not None:
            listen["web console"] = self.http_listen
        listen.update({f"node {i}": address for i, address in self.addresses.items()})
        listen.update({f"node {i} peers": address for i, address in self.peer_addresses.items()})
        if self.gateway_metrics_address is not None:
            listen["gateway metrics"] = self.gateway_metrics_address
        listen.update({f"node {i} metrics": a for i, a in self.metrics_addresses.items()})
        return listen

    def taken_ports(self) -> list[str]:
        """What is in the way: one line per port of this cluster another process listens on."""
        taken = []
        for what, address in self.listen_addresses().items():
            try:
                port_probe.probe(address, what)
            except OSError as exc:
                taken.append(str(exc))
        return taken

    def lifeline(self) -> lifeline.Lifeline:
        """The watchdog that stops what this cluster started if this process dies."""
        if self._lifeline is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lifeline = lifeline.Lifeline(self.root / "lifeline.log")
        return self._lifeline

    def start_postgres(self) -> str:
        """The embedded server in ``root/postgres``, unless a DSN was given."""
        if self.dsn is None:
            from dpq.pg import embedded

            self.lifeline().watch_postgres(self.root / "postgres")
            self._postgres = embedded.start(self.root / "postgres")
            self.dsn = self._postgres.dsn
        return self.dsn

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_postgres()
        for i in self.ids:
            self.start_node(i)
        self.start_gateway()

    def start_node(self, node_id: int) -> None:
        data = self.root / f"n{node_id}"
        cmd = [sys.executable, "-m", "dpq.node", "--id", str(node_id),
               "--listen", self.addresses[node_id], "--peer-listen", self.peer_addresses[node_id],
               "--peers", self.peers_of(node_id), "--data-dir", str(data), "--dsn", self.dsn,
               *(("--insecure",) if self.insecure and "--insecure" not in self.node_args else ()),
               *(("--metrics-listen", self.metrics_addresses[node_id])
                 if node_id in self.metrics_addresses else ()),
               *self.node_args]
        self.procs[node_id] = self._spawn(cmd, data, self.cpus.get(node_id))

    def start_gateway(self) -> None:
        data = self.root / "gateway"
        cmd = [sys.executable, "-m", "dpq.gateway", "--listen", self.gateway_address,
               "--nodes", ",".join(self.addresses.values()), "--log-dir", str(data),
               *(("--metrics-listen", self.gateway_metrics_address)
                 if self.gateway_metrics_address is not None else ()),
               *self.gateway_args]
        self.gateway = self._spawn(cmd, data, None)

    def _spawn(self, cmd: list[str], data: Path, cpus: set[int] | None) -> subprocess.Popen:
        data.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT, **lifeline.child_env(cpus))
        watchdog = self.lifeline()
        with open(data / "stderr.log", "ab") as log:
            proc = subprocess.Popen(
                cmd, cwd=data, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                **lifeline.popen_kwargs())  # own session; dies with us (child_env)
        watchdog.watch(proc.pid)
        return proc

    def stop_node(self, node_id: int, sig: int = signal.SIGTERM, timeout_s: float = 15) -> None:
        proc = self.procs.pop(node_id)
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stop the gateway, every node, and the embedded server."""
        if self.gateway is not None:
            self.gateway.terminate()
            try:
                self.gateway.wait(15)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
            self.gateway = None
        for i in list(self.procs):
            self.stop_node(i)
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None

    def exited(self) -> dict[str, tuple[int, Path]]:
        """Processes that ended by themselves: their exit codes and logs, by name."""
        out = {f"node {i}": (p.returncode, self.log_path(i))
               for i, p in self.procs.items() if p.poll() is not None}
        if self.gateway is not None and self.gateway.poll() is not None:
            out["gateway"] = (self.gateway.returncode, self.log_path("gateway"))
        return out

    def log_path(self, which: int | str) -> Path:
        """The stderr log of node ``which`` (an id) or of the ``"gateway"``."""
        return self.root / (f"n{which}" if isinstance(which, int) else which) / "stderr.log"

    # ---------------------------------------------------------------- waiting

    def wait_ready(self, timeout_s: float = 60,
                   stop: threading.Event | None = None) -> queue_pb2.ClusterInfoResponse:
        """Until the gateway answers with a leader and every node reachable (or ``stop``)."""
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        with self.client_channel(self.gateway_address) as channel:
            stub = queue_pb2_grpc.QueueStub(channel)
            while time.monotonic() < deadline:
                if stop is not None and stop.is_set():
                    raise ClusterError("stopped before the cluster was ready")
                dead = self.exited()
                if dead:
                    raise ClusterError("exited early: " + "; ".join(
                        f"{name} (code {code}, log {log})" for name, (code, log) in dead.items()))
                try:
                    info = stub.ClusterInfo(queue_pb2.ClusterInfoRequest(), timeout=2)
                    if info.leader_id and all(n.reachable for n in info.nodes):
                        return info
                    last = f"leader {info.leader_id or 'not elected'}"
                except grpc.RpcError as exc:
                    last = exc.details() or exc.code().name
                time.sleep(0.1)
        raise ClusterError(f"the cluster was not ready within {timeout_s}s ({last}); "
                           f"see the stderr.log files under {self.root}")

    def client_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS with the clients' token for a client port, or None (plaintext)."""
        if self.tls_dir is None:
            return None
        from dpq.security.tls import client_credentials

        return client_credentials(self.tls_dir)

    def client_channel(self, address: str) -> grpc.Channel:
        """A blocking channel to a client port (a node's or the gateway's)."""
        credentials = self.client_credentials()
        if credentials is None:
            return grpc.insecure_channel(address)
        return grpc.secure_channel(address, credentials)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
