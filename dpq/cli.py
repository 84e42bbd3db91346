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


def gateway_main(argv: list[str] | None = None) -> int:
    """``dpq-gateway``: the enqueue manager in front of a cluster."""
    from dpq import logs
    from dpq.gateway.app import GatewayConfig

    parser = argparse.ArgumentParser(
        prog="dpq-gateway",
        description="Buffer and batch enqueues, spread jobs over the nodes by live health, "
        "and route the other calls. Example:\n  dpq-gateway --listen 127.0.0.1:7100 "
        "--nodes 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--listen", default="127.0.0.1:7100", help="HOST:PORT to serve on (127.0.0.1:7100)")
    parser.add_argument("--nodes", required=True, help="the nodes' addresses, comma-separated")
    parser.add_argument("--max-batch", type=int, default=1000, help="jobs per proposal at most (1000)")
    parser.add_argument("--max-delay-ms", type=float, default=2.0,
                        help="how long a batch may wait to fill while others are in flight (2)")
    parser.add_argument("--dedup-window-ms", type=int, default=3_600_000,
                        help="how long a dedup key is remembered (1 h)")
    parser.add_argument("--max-payload-bytes", type=int, default=1 << 20, help="largest payload (1 MiB)")
    parser.add_argument("--log-dir", help="write errors.log and requests.log here too")
    parser.add_argument("--log-level", default="WARNING", help="error log level (WARNING)")
    parser.add_argument("--request-log-level", default="INFO", help="request log level (INFO)")
    args = parser.parse_args(argv)
    nodes = [a.strip() for a in args.nodes.split(",") if a.strip()]
    if not nodes or any(":" not in a for a in nodes):
        print(f"dpq-gateway: --nodes {args.nodes!r} is not a list of HOST:PORT", file=sys.stderr)
        return 2
    logs.setup(args.log_dir, level=args.log_level, request_level=args.request_log_level)
    config = GatewayConfig(listen=args.listen, nodes=nodes, max_batch=args.max_batch,
                           max_delay_ms=args.max_delay_ms, dedup_window_ms=args.dedup_window_ms,
                           max_payload_bytes=args.max_payload_bytes)
    try:
        return asyncio.run(_serve_gateway(config))
    except KeyboardInterrupt:
        return 0


async def _serve_gateway(config) -> int:
    from dpq.gateway.app import Gateway

    try:
        gateway = Gateway(config)
    except OSError as exc:
        print(f"dpq-gateway: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    print(f"dpq-gateway serving on {config.listen} (port {gateway.port})", flush=True)
    try:
        await stop.wait()
    finally:
        await gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
