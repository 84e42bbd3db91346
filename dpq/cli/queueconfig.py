"""``dpq queue config Q [--max-in-flight N] [--rate 200/s] …``: a queue's settings.

With no setting given it shows them; with some it changes only those (0 clears a
limit) and shows the result. Parsing and formatting are pure, tested without a
cluster; :mod:`dpq.cli.manage` wires the command to :class:`dpq.client.Admin`.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from dpq.client.admin import QueueConfig

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|m|min|h|hour))?\s*")
_PER_S = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 1 / 60, "min": 1 / 60, "h": 1 / 3600,
          "hour": 1 / 3600}


def rate(text: str) -> float:
    """``"200/s"``, ``"30/m"``, ``"100/h"`` or plain jobs per second → jobs per second."""
    match = _RATE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate like 200/s, 30/m or 100/h (0 = no limit)")
    return float(match.group(1)) * _PER_S[match.group(2)]


def weight(text: str) -> tuple[str, int]:
    """``KEY=W`` → (key, weight); the key may be empty (jobs without a fairness key)."""
    key, sep, value = text.rpartition("=")
    if not sep or not value.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=WEIGHT (a whole number; 0 removes the key)")
    return key, int(value)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("queue", metavar="Q")
    p.add_argument("--max-in-flight", type=int, metavar="N",
                   help="at most N leased jobs of Q over the whole cluster (0: no limit)")
    p.add_argument("--rate", type=rate, metavar="RATE",
                   help="at most this many deliveries: 200/s, 30/m, 100/h (0: no limit)")
    p.add_argument("--burst", type=int, metavar="N",
                   help="deliveries the rate lets through at once (default: a tenth of the "
                        "rate, at least 1)")
    p.add_argument("--weight", type=weight, action="append", metavar="KEY=W",
                   help="the weight of a fairness key (repeat; 0 removes it)")
    p.add_argument("--replace-weights", action="store_true",
                   help="the --weight options replace every weight set before")
    p.add_argument("--default-weight", type=int, metavar="W",
                   help="the weight of keys not listed (default 1)")
    p.add_argument("--max-attempts", type=int, metavar="N",
                   help="deliveries before a job goes dead (0: the node's --max-attempts)")


def changes(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``Admin.set_queue_config`` the options ask for ({}: show)."""
    out: dict[str, Any] = {}
    for option, name in (("max_in_flight", "max_in_flight"), ("rate", "max_rate_per_s"),
                         ("burst", "burst"), ("default_weight", "default_fairness_weight"),
                         ("max_attempts", "max_attempts")):
        value = getattr(args, option)
        if value is not None:
            out[name] = value
    if args.weight or args.replace_weights:
        out["fairness_weights"] = dict(args.weight or ())
        out["replace_fairness_weights"] = args.replace_weights
    return out


def run(admin, args: argparse.Namespace) -> QueueConfig:
    wanted = changes(args)
    if not wanted:
        return admin.get_queue_config(args.queue)
    return admin.set_queue_config(args.queue, **wanted)


def lines(config: QueueConfig) -> list[str]:
    """The settings for people: one line per setting, "-" where none is set."""
    def limit(value, unit: str = "") -> str:
        return f"{value:g}{unit}" if value else "-"

    weights = ", ".join(f"{k or '(none)'}={w}" for k, w in sorted(config.fairness_weights.items()))
    rows = [("max in flight", limit(config.max_in_flight)),
            ("rate", limit(config.max_rate_per_s, "/s")),
            ("burst", str(config.burst) if config.burst
             else "default (a tenth of the rate)" if config.max_rate_per_s else "-"),
            ("fairness weights", weights or "-"),
            ("default weight", str(config.default_fairness_weight or 1)),
            ("max attempts", limit(config.max_attempts) if config.max_attempts
             else "- (the node's)")]
    width = max(len(name) for name, _ in rows)
    head = f"queue {config.queue}" + (f" (log slot {config.slot})" if config.slot else "")
    return [head] + [f"  {name.ljust(width)}  {value}" for name, value in rows]
