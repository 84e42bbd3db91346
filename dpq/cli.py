"""The ``dpq`` command line."""

from __future__ import annotations

import argparse
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


if __name__ == "__main__":
    sys.exit(main())
