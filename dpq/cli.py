"""The command-line entry points: ``dpq`` and ``dpq-node``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dpq", description="dpq: a distributed priority job queue")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("demo", help="a short tour of the aging heap and the balancer")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from dpq import demo

        demo.main()
    return 0


def node_main(argv: list[str] | None = None) -> int:
    """``dpq-node``: run one node of a cluster until SIGINT or SIGTERM."""
    from dpq import logs
    from dpq.node import config

    parser = argparse.ArgumentParser(
        prog="dpq-node",
        description="Run one dpq node. Three nodes on one machine, for example:\n"
        "  dpq-node --id 1 --listen 127.0.0.1:7101 "
        "--peers 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 "
        "--data-dir data/n1 --dsn postgresql://...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config.from_arguments(args)
    except (config.ConfigError, OSError) as exc:
        print(f"dpq-node: {exc}", file=sys.stderr)
        return 2
    logs.setup(os.path.join(cfg.data_dir, "logs"), level=cfg.log_level,
               request_level=cfg.request_log_level)
    try:
        return asyncio.run(_serve_node(cfg))
    except KeyboardInterrupt:
        return 0


async def _serve_node(cfg) -> int:
    from dpq.node.node import Node

    embedded = None
    dsn = cfg.dsn
    if not dsn:
        from dpq.pg import embedded as embedded_pg

        embedded = await asyncio.to_thread(embedded_pg.start, os.path.join(cfg.data_dir, "postgres"))
        dsn = embedded.dsn
    node = Node(cfg, dsn)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
        print(f"dpq-node {cfg.node_id} serving on {cfg.listen} (port {node.port})", flush=True)
        signalled = asyncio.create_task(stop.wait())
        died = asyncio.create_task(node.stopped.wait())
        await asyncio.wait([signalled, died], return_when=asyncio.FIRST_COMPLETED)
    finally:
        await node.stop()
        if embedded is not None:
            embedded.stop()
    if node.failed is not None:
        print(f"dpq-node {cfg.node_id} stopped: {node.failed!r} (see the error log)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
