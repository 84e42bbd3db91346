"""``dpq up``: a whole local cluster in one command, until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
import time

from dpq.localcluster import ClusterError, LocalCluster


def run(nodes: int, data_dir: str, port_base: int, dsn: str | None, demo: bool,
        out=sys.stdout) -> int:
    node_args: tuple[str, ...] = ()
    if demo:
        from dpq import showcase

        node_args = ("--aging-step-ms", str(showcase.AGING_STEP_MS))
    cluster = LocalCluster(data_dir, nodes=nodes, port_base=port_base, dsn=dsn, node_args=node_args)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        where = "the embedded PostgreSQL" if dsn is None else "PostgreSQL at --dsn"
        print(f"starting {nodes} nodes and a gateway on {where} (data in {cluster.root}) ...",
              file=out, flush=True)
        cluster.start()
        info = cluster.wait_ready()
        _print_endpoints(cluster, info, out)
        if demo:
            showcase.run(cluster.gateway_address, list(cluster.addresses.values()), out=out,
                         stop=stop)
            return 0
        print("\nTry, in another terminal:\n"
              f"  dpq enqueue --priority 1 'hello'          (DPQ_ADDR defaults to {cluster.gateway_address})\n"
              "  dpq consume --count 1\n"
              "  dpq stats\n"
              "  dpq status\n"
              "Ctrl-C stops everything; the jobs stay in the data folder for the next `dpq up`.",
              file=out, flush=True)
        reported: set[str] = set()
        while not stop.wait(0.5):
            for name, (code, log) in cluster.exited().items():
                if name not in reported:
                    reported.add(name)
                    print(f"{name} exited (code {code}); the others go on. Its log: {log}",
                          file=out, flush=True)
        return 0
    except ClusterError as exc:
        print(f"dpq up: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping ...", file=out, flush=True)
        cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_endpoints(cluster: LocalCluster, info, out) -> None:
    roles = {n.node_id: n.role for n in info.nodes}
    print(f"\ndpq is up ({time.strftime('%H:%M:%S')}), cluster {info.cluster_fingerprint}:",
          file=out)
    print(f"  gateway   {cluster.gateway_address}", file=out)
    for i, address in cluster.addresses.items():
        print(f"  node {i}    {address}   peers on {cluster.peer_addresses[i]}   "
              f"{roles.get(i, '?')}", file=out)
    print(f"  postgres  {cluster.dsn}", file=out)
    if cluster.insecure:
        print("  plaintext: no TLS, no client token (loopback only; for a network, see "
              "`dpq certs init`)", file=out)
    print("  ports: clients use the gateway or a node's port; the nodes talk to each other "
          "on the peer ports (port-base + 10 + i)", file=out, flush=True)
