"""``dpq-node``: run one node of a cluster until SIGINT or SIGTERM (``python -m dpq.node``).

The ``dpq-node`` entry point stays ``dpq.cli:node_main``; it lives here, with the node,
so the node's package imports nothing from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from dpq import runtime
from dpq.services import ports


def node_main(argv: list[str] | None = None) -> int:
    """``dpq-node``: run one node of a cluster until SIGINT or SIGTERM."""
    from dpq import logs
    from dpq.node import config

    parser = argparse.ArgumentParser(
        prog="dpq-node",
        description="Run one dpq node. Three nodes on one machine, for example:\n"
        "  dpq-node --id 1 --listen 127.0.0.1:7101 --peer-listen 127.0.0.1:7111 "
        "--peers 1=127.0.0.1:7111,2=127.0.0.1:7112,3=127.0.0.1:7113 "
        "--data-dir data/n1 --dsn postgresql://... --tls-dir certs\n"
        "Clients use --listen; the nodes talk to each other on --peer-listen.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config.from_arguments(args)
        ports.probe_all({"--listen": cfg.listen, "--peer-listen": cfg.peer_listen,
                         "--metrics-listen": cfg.metrics_listen})
    except (config.ConfigError, OSError) as exc:
        print(f"dpq-node: {exc}", file=sys.stderr)
        return 2
    logs.setup(os.path.join(cfg.data_dir, "logs"), level=cfg.log_level,
               request_level=cfg.request_log_level)
    try:
        return runtime.run(_serve_node(cfg))
    except KeyboardInterrupt:
        return 0


async def _serve_node(cfg) -> int:
    from dpq.node import identity, planes
    from dpq.node.config import ConfigError
    from dpq.node.node import Node, StartError

    try:
        credentials = planes.credentials(cfg)
    except ConfigError as exc:
        print(f"dpq-node: {exc}", file=sys.stderr)
        return 2
    embedded = watchdog = None
    dsn = cfg.dsn
    if not dsn:
        from dpq.lifeline import Lifeline
        from dpq.pg import embedded as embedded_pg

        # Its postmaster is not our child: stop it if this process is killed.
        watchdog = Lifeline()
        watchdog.watch_postgres(os.path.join(cfg.data_dir, "postgres"))
        embedded = await asyncio.to_thread(embedded_pg.start,
                                           os.path.join(cfg.data_dir, "postgres"))
        dsn = embedded.dsn

    def let_go() -> None:
        if embedded is not None:
            embedded.stop()
        if watchdog is not None:
            watchdog.close()

    if not await _postgres_at_start(cfg, dsn):
        let_go()
        return 2
    try:
        who = await identity.establish(cfg.data_dir, cfg.node_id, dsn, rejoin=cfg.rejoin)
    except identity.IdentityError as exc:
        print(f"dpq-node {cfg.node_id}: {exc}", file=sys.stderr)
        let_go()
        return 2
    try:
        node = Node(cfg, dsn, who, credentials)
    except StartError as exc:
        print(exc, file=sys.stderr)
        let_go()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await node.start()
        except OSError as exc:  # a port taken since the probe
            print(f"dpq-node: {exc}", file=sys.stderr)
            return 2
        runtime.tune_for_server()
        peers = f", peers on {cfg.peer_listen} (port {node.peer_port})" if cfg.peer_listen else ""
        if node.metrics is not None:
            peers += f", metrics on http://{cfg.metrics_listen}/metrics (port {node.metrics.port})"
        print(f"dpq-node {cfg.node_id} serving on {cfg.listen} (port {node.port}){peers}, "
              f"cluster {who.fingerprint}", flush=True)
        signalled = asyncio.create_task(stop.wait())
        died = asyncio.create_task(node.stopped.wait())
        await asyncio.wait([signalled, died], return_when=asyncio.FIRST_COMPLETED)
    finally:
        await node.stop()
        let_go()
    if node.failed is not None:
        print(f"dpq-node {cfg.node_id} stopped: {node.failed!r} (see the error log)",
              file=sys.stderr)
        return 1
    return 0


async def _postgres_at_start(cfg, dsn: str) -> bool:
    """Refuse a DSN that cannot work (False); a server that is only down is a warning."""
    import logging

    from dpq.pg import connect

    try:
        down = await connect.prepare(dsn, cfg.postgres_timeout_ms / 1000)
    except connect.DsnError as exc:
        print(f"dpq-node: {exc}", file=sys.stderr)
        return False
    if down is not None:
        logging.getLogger("dpq.node").warning(
            "PostgreSQL at %s is not reachable (%s): starting anyway; the queue serves from the "
            "log and the leader migrates and writes once PostgreSQL is back",
            connect.where(dsn), down)
    return True
