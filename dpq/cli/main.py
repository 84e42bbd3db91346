"""The command-line entry points: ``dpq``, ``dpq-node`` and ``dpq-gateway``."""

from __future__ import annotations

import argparse
import os
import sys

from dpq import settings
from dpq.gateway.main import gateway_main
from dpq.node.main import node_main

__all__ = ["gateway_main", "main", "node_main"]


def _target(args: argparse.Namespace) -> str:
    return args.target or os.environ.get("DPQ_ADDR") or settings.DEFAULT_GATEWAY


def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target",
                   help="HOST:PORT of a gateway or node "
                        f"(default: $DPQ_ADDR, else {settings.DEFAULT_GATEWAY})")
    p.add_argument("--tls-dir", help="the cluster's TLS folder (ca.pem, token) "
                                     "(default: $DPQ_TLS_DIR, else ./dpq-data/tls "
                                     "if it exists, else plaintext)")


def main(argv: list[str] | None = None) -> int:
    from dpq.cli import commands, manage, schedule

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
            _client_options(p)
        return p

    up = sub("up", "start a local cluster (nodes + gateway) until Ctrl-C")
    up.add_argument("--nodes", type=int, default=3, help="how many nodes (3; 1, 3 or 5)")
    up.add_argument("--dsn", help="PostgreSQL URL (default: an embedded server in the data dir)")
    up.add_argument("--data-dir", default="dpq-data", help="where everything is kept (./dpq-data)")
    up.add_argument("--port-base", type=int, default=settings.DEFAULT_PORT_BASE,
                    help="gateway on this port, node i on port-base + i for clients and "
                         f"port-base + 10 + i for its peers, the web console on port-base + "
                         f"980 ({settings.DEFAULT_PORT_BASE}: console on 8080)")
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

    st = sub("stats", "ready/delayed/leased/dead/cancelled jobs by queue and priority, "
                      "and paused queues")
    st.add_argument("--queue", default="", help="one queue (default: all)")
    sub("status", "nodes, roles, leader, ballot, commit/applied index, lag, health, weights")
    top = sub("top", "a live view of the cluster: nodes, queues by priority, rates (Ctrl-C quits)")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--interval", type=commands.duration, default=1.0, help="refresh (1s)")
    manage.add_commands(commands_, _client_options)  # dpq job …, dpq queue …
    schedule.add_commands(commands_, _client_options)  # dpq schedule …
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
        if args.command in manage.COMMANDS:
            return manage.run(args, target, tls, out=sys.stdout)
        if args.command in schedule.COMMANDS:
            return schedule.run(args, target, tls, out=sys.stdout)
        if args.command == "top":
            from dpq.cli import top as top_view

            return top_view.run(target, tls, once=args.once, interval_s=args.interval,
                                out=sys.stdout)
        if args.command == "stats":
            return commands.stats(target, queue=args.queue, out=sys.stdout, tls_dir=tls)
        return commands.status(target, out=sys.stdout, tls_dir=tls)
    except commands.CommandError as exc:
        print(f"dpq {getattr(args, 'full_command', args.command)}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
