"""``dpq up``: a whole local cluster in one command, until Ctrl-C.

It owns what it starts: SIGINT, SIGTERM and SIGHUP (the terminal closed) stop
everything in order; if ``dpq up`` itself is killed, ``dpq.lifeline`` stops its
nodes, gateway and embedded PostgreSQL. Before starting anything it checks
that none of its ports is taken and that no other ``dpq up`` runs on its data
folder.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path

from dpq.cli.commands import TLS_OFF_FILE, UP_TLS_DIR
from dpq.cli.localcluster import ClusterError, LocalCluster, metrics_ports
from dpq.cli.progress import Progress

TLS_SUBDIR = "tls"

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: The web console listens on port-base + this: 8080 with the default port base.
CONSOLE_PORT_OFFSET = 980


def _say(out, text: str) -> None:
    """Print, unless the terminal is gone (after SIGHUP): stopping must go on regardless."""
    try:
        print(text, file=out, flush=True)
    except OSError:
        pass


def _lock_folder(root: Path) -> int:
    """Hold ``root/dpq-up.lock`` for as long as this process lives (the kernel lets go)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / "dpq-up.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ClusterError(f"another dpq up (pid {holder}) is running on the data folder "
                           f"{root}; stop it first or use another --data-dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def run(nodes: int, data_dir: str, port_base: int, dsn: str | None, demo: bool,
        out=sys.stdout, tls: bool = False) -> int:
    node_args: tuple[str, ...] = ()
    if demo:
        from dpq.cli import demo as showcase

        node_args = ("--aging-step-ms", str(showcase.AGING_STEP_MS))
    try:
        tls_dir = _tls_material(data_dir, nodes, tls)
    except OSError as exc:
        print(f"dpq up: {exc}", file=sys.stderr)
        return 1
    console_port = port_base + CONSOLE_PORT_OFFSET
    if not 0 < console_port < 65536:
        print(f"dpq up: --port-base {port_base} puts the web console on port {console_port}, "
              f"outside 1..65535 (it listens on port-base + {CONSOLE_PORT_OFFSET})",
              file=sys.stderr)
        return 1
    metrics = metrics_ports(port_base, nodes)
    if metrics[-1] > 65535:
        print(f"dpq up: --port-base {port_base} leaves no room for the metrics ports "
              f"(port-base + 2000 .. + {2000 + nodes}): use a lower one", file=sys.stderr)
        return 1
    cluster = LocalCluster(data_dir, nodes=nodes, port_base=port_base, dsn=dsn,
                           node_args=node_args, tls_dir=tls_dir,
                           http_listen=f"127.0.0.1:{console_port}", metrics_ports=metrics)
    taken = cluster.taken_ports()
    if taken:
        print("dpq up: " + "; ".join(taken) + " (another dpq up? stop it, or use --port-base)",
              file=sys.stderr)
        return 1
    try:
        lock = _lock_folder(cluster.root)
    except (ClusterError, OSError) as exc:
        print(f"dpq up: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        where = "the embedded PostgreSQL" if dsn is None else "PostgreSQL at --dsn"
        _say(out, f"starting {nodes} nodes and a gateway on {where} (data in {cluster.root}) ...")
        with Progress("starting PostgreSQL" if dsn is None else "starting") as progress:
            cluster.root.mkdir(parents=True, exist_ok=True)
            cluster.start_postgres()
            progress.update(f"starting {nodes} nodes and a gateway")
            cluster.start()
            progress.update("waiting for the nodes to elect a leader and the gateway to see it")
            info = cluster.wait_ready(stop=stop)
        _print_endpoints(cluster, info, out)
        if demo:
            showcase.run(cluster.gateway_address, list(cluster.addresses.values()), out=out,
                         stop=stop, tls_dir=tls_dir)
            return 0
        _say(out, "\nTry, in another terminal:\n"
             "  dpq enqueue --priority 1 'hello'          "
             f"(DPQ_ADDR defaults to {cluster.gateway_address})\n"
             "  dpq consume --count 1\n"
             "  dpq stats\n"
             "  dpq status\n"
             "Ctrl-C stops everything; the jobs stay in the data folder for the next `dpq up`.")
        reported: set[str] = set()
        while not stop.wait(0.5):
            for name, (code, log) in cluster.exited().items():
                if name not in reported:
                    reported.add(name)
                    _say(out, f"{name} exited (code {code}); the others go on. Its log: {log}")
        return 0
    except ClusterError as exc:
        if stop.is_set():
            return 0
        _say(sys.stderr, f"dpq up: {exc}")
        return 1
    finally:
        _say(out, "stopping ...")
        with Progress("stopping the gateway, the nodes and PostgreSQL"):
            cluster.stop()
        os.close(lock)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _tls_material(data_dir: str, nodes: int, tls: bool) -> str | None:
    """``--tls``: the folder of the cluster's material (``<data>/tls``), made where
    missing (an existing CA and token are kept, so clients keep working).

    Without ``--tls``, a ``<data>/tls`` left by an earlier ``dpq up --tls`` stays
    (its CA and token are used again next time) and a ``<data>/tls-off`` marker
    beside it tells the CLI not to look for TLS there: it would be refused by
    this plaintext cluster. ``--tls`` removes the marker.
    """
    from dpq.security.certs import CertsError

    folder = os.path.join(data_dir, TLS_SUBDIR)
    marker = os.path.join(data_dir, TLS_OFF_FILE)
    if not tls:
        if os.path.isdir(folder):
            with open(marker, "w") as f:
                f.write("dpq up runs this cluster in plaintext: the dpq commands ignore the "
                        "tls folder beside this file until `dpq up --tls` removes it\n")
        return None
    from dpq.security import certs

    try:
        certs.ensure(folder, nodes)
    except CertsError as exc:
        raise OSError(str(exc)) from None
    if os.path.exists(marker):
        os.unlink(marker)
    return os.path.abspath(folder)


def _print_endpoints(cluster: LocalCluster, info, out) -> None:
    roles = {n.node_id: n.role for n in info.nodes}
    lines = [f"\ndpq is up ({time.strftime('%H:%M:%S')}), cluster {info.cluster_fingerprint}:",
             f"  gateway   {cluster.gateway_address}"]
    if cluster.http_listen is not None:
        lines.append(f"  console   http://{cluster.http_listen}/")
    lines += [f"  node {i}    {address}   peers on {cluster.peer_addresses[i]}   "
              f"{roles.get(i, '?')}" for i, address in cluster.addresses.items()]
    lines.append(f"  postgres  {cluster.dsn}")
    if cluster.gateway_metrics_address is not None:
        urls = [cluster.gateway_metrics_address, *cluster.metrics_addresses.values()]
        lines.append("  metrics   " + "  ".join(f"http://{a}/metrics" for a in urls)
                     + "  (Prometheus; gateway, then nodes)")
    if cluster.tls_dir is not None:
        found = os.path.realpath(UP_TLS_DIR) == os.path.realpath(cluster.tls_dir)
        lines.append(f"  TLS: on (mutual TLS between the nodes, TLS + bearer token for clients); "
                     f"CA, certificates and token in {cluster.tls_dir}")
        lines.append("       dpq commands run in this folder find it" if found else
                     f"       give dpq commands --tls-dir {cluster.tls_dir} "
                     f"(or export DPQ_TLS_DIR={cluster.tls_dir})")
    elif cluster.insecure:
        lines.append("  plaintext: no TLS, no client token (loopback only; `dpq up --tls` turns "
                     "TLS on; for a network, see `dpq certs init`)")
    lines.append("  ports: clients use the gateway or a node's port; the nodes talk to each other "
                 "on the peer ports (port-base + 10 + i)")
    _say(out, "\n".join(lines))
