"""The command-line entry points: ``dpq``, ``dpq-node`` and ``dpq-gateway``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from dpq import runtime, settings


def _target(args: argparse.Namespace) -> str:
    return args.target or os.environ.get("DPQ_ADDR") or settings.DEFAULT_GATEWAY


def main(argv: list[str] | None = None) -> int:
    from dpq.cli import commands

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own options: see dpq/bench/e2e.py
        from dpq.bench import e2e

        return e2e.main(argv[1:], prog="dpq bench")
    parser = argparse.ArgumentParser(
        prog="dpq", description="dpq: a distributed priority job queue. "
        "`dpq up` starts a local cluster; the other commands talk to one.")
    commands_ = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def sub(name: str, help: str) -> argparse.ArgumentParser:
        p = commands_.add_parser(name, help=help, description=help)
        if name not in ("up", "demo"):
            p.add_argument("--target",
                           help="HOST:PORT of a gateway or node "
                                f"(default: $DPQ_ADDR, else {settings.DEFAULT_GATEWAY})")
            p.add_argument("--tls-dir", help="the cluster's TLS folder (ca.pem, token) "
                                             "(default: $DPQ_TLS_DIR, else ./dpq-data/tls "
                                             "if it exists, else plaintext)")
        return p

    up = sub("up", "start a local cluster (nodes + gateway) until Ctrl-C")
    up.add_argument("--nodes", type=int, default=3, help="how many nodes (3; 1, 3 or 5)")
    up.add_argument("--dsn", help="PostgreSQL URL (default: an embedded server in the data dir)")
    up.add_argument("--data-dir", default="dpq-data", help="where everything is kept (./dpq-data)")
    up.add_argument("--port-base", type=int, default=settings.DEFAULT_PORT_BASE,
                    help="gateway on this port, node i on port-base + i for clients and "
                         f"port-base + 10 + i for its peers ({settings.DEFAULT_PORT_BASE})")
    up.add_argument("--demo", action="store_true",
                    help="run a producer/consumer demo of priorities and aging, then stop")
    up.add_argument("--tls", action="store_true",
                    help="TLS between the nodes and for clients (with a bearer token); the "
                         "material is made in DATA_DIR/tls once and kept (default: plaintext "
                         "on loopback)")

    enq = sub("enqueue", "enqueue jobs: each PAYLOAD argument (or stdin line) is one job")
    enq.add_argument("payloads", nargs="*", metavar="PAYLOAD")
    enq.add_argument("--queue", default="default")
    enq.add_argument("--priority", type=int, default=3, help="1 (most urgent) .. 5 (3)")
    enq.add_argument("--delay", type=commands.duration,
                     help="deliver after this long: 250ms, 5s, 2m")
    enq.add_argument("--dedup-key",
                     help="a key seen again within the dedup window returns the first job")

    con = sub("consume", "print jobs as they arrive (acking them unless --no-ack)")
    con.add_argument("--queue", default="default")
    con.add_argument("--count", type=int,
                     help="stop after this many jobs (default: run until Ctrl-C)")
    con.add_argument("--ack", action=argparse.BooleanOptionalAction, default=True,
                     help="ack each job (default) or give it back with --no-ack")
    con.add_argument("--wait", type=commands.duration, default=10.0, help="long-poll wait (10s)")
    con.add_argument("--lease", type=commands.duration, default=30.0, help="lease per job (30s)")

    st = sub("stats", "ready/delayed/leased/dead jobs by queue and priority")
    st.add_argument("--queue", default="", help="one queue (default: all)")
    sub("status", "nodes, roles, leader, ballot, commit/applied index, lag, health, weights")
    sub("demo", "a short tour of the aging heap and the balancer (no cluster needed)")
    commands_.add_parser("bench", help="the end-to-end benchmark (dpq bench --help)")
    certs = commands_.add_parser("certs", help="TLS material for a cluster (dpq certs init)")
    init = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION").add_parser(
        "init", help="write a CA, node/gateway/client certificates and the client token to DIR")
    init.add_argument("dir", metavar="DIR")
    init.add_argument("--nodes", type=int, default=3, help="node certificates 1..N (3)")
    init.add_argument("--hosts", default="127.0.0.1,localhost,::1",
                      help="names and IPs every certificate is valid for, comma-separated "
                           "(127.0.0.1,localhost,::1)")
    init.add_argument("--days", type=int, default=825, help="certificate validity (825 days)")
    init.add_argument("--force", action="store_true", help="replace an existing CA in DIR")

    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            from dpq.cli import up

            return up.run(args.nodes, args.data_dir, args.port_base, args.dsn, args.demo,
                          tls=args.tls)
        if args.command == "demo":
            from dpq.cli import demo

            demo.tour()
            return 0
        if args.command == "certs":
            return commands.certs_init(args.dir, nodes=args.nodes, hosts=args.hosts,
                                       force=args.force, days=args.days, out=sys.stdout)
        target = _target(args)
        tls = commands.tls_dir_for(args.tls_dir)
        if args.command == "enqueue":
            payloads = args.payloads or ([] if sys.stdin.isatty() else commands.stdin_lines())
            return commands.enqueue(target, payloads, queue=args.queue, priority=args.priority,
                                    delay_s=args.delay, dedup_key=args.dedup_key, out=sys.stdout,
                                    tls_dir=tls)
        if args.command == "consume":
            return commands.consume(target, queue=args.queue, count=args.count, ack=args.ack,
                                    wait_s=args.wait, lease_s=args.lease, out=sys.stdout,
                                    tls_dir=tls)
        if args.command == "stats":
            return commands.stats(target, queue=args.queue, out=sys.stdout, tls_dir=tls)
        return commands.status(target, out=sys.stdout, tls_dir=tls)
    except commands.CommandError as exc:
        print(f"dpq {args.command}: {exc}", file=sys.stderr)
        return 1


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
        _probe_ports({"--listen": cfg.listen, "--peer-listen": cfg.peer_listen})
    except (config.ConfigError, OSError) as exc:
        print(f"dpq-node: {exc}", file=sys.stderr)
        return 2
    logs.setup(os.path.join(cfg.data_dir, "logs"), level=cfg.log_level,
               request_level=cfg.request_log_level)
    try:
        return runtime.run(_serve_node(cfg))
    except KeyboardInterrupt:
        return 0


def _probe_ports(addresses: dict[str, str]) -> None:
    """Fail fast, before anything starts, if a port to listen on is taken (by flag)."""
    from dpq.services import ports

    for flag, address in addresses.items():
        if address:
            ports.probe(address, flag)


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


def gateway_main(argv: list[str] | None = None) -> int:
    """``dpq-gateway``: the enqueue manager in front of a cluster."""
    import logging

    from dpq import logs
    from dpq.gateway import config as gateway_config

    try:
        config = gateway_config.from_args(argv)
        _probe_ports({"--listen": config.listen})
    except (gateway_config.ConfigError, OSError) as exc:
        print(f"dpq-gateway: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_dir, level=config.log_level, request_level=config.request_log_level)
    if config.tls is None:
        logging.getLogger("dpq.gateway").warning(
            "plaintext: the client port %s and the calls to the nodes carry no TLS and no token; "
            "use TLS (`dpq certs init`, --tls-dir) on any network you do not trust", config.listen)
    try:
        return runtime.run(_serve_gateway(config))
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
    runtime.tune_for_server()
    print(f"dpq-gateway serving on {config.listen} (port {gateway.port})", flush=True)
    try:
        await stop.wait()
    finally:
        await gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
