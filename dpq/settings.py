"""Settings from flags and a TOML file: the merging ``dpq-node`` and ``dpq-gateway`` share.

A TOML file (``--config FILE.toml``) takes the same keys as the flags, with
dashes or underscores (``max-inflight`` or ``max_inflight``); a flag given on
the command line wins over the file. Flags are declared with ``None`` defaults
so that the merge can tell a given flag from an absent one: the defaults live
in each config dataclass, as named module constants.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Iterable
from typing import Any

#: ``dpq up``'s ``--port-base``: its gateway listens there, node i on the base + i.
DEFAULT_PORT_BASE = 7100
#: Where ``dpq-gateway`` listens by default, and where the client library and the
#: ``dpq`` commands look when given no target and no ``$DPQ_ADDR``: the local
#: ``dpq up`` gateway.
DEFAULT_GATEWAY = f"127.0.0.1:{DEFAULT_PORT_BASE}"


class ConfigError(ValueError):
    """A configuration a process cannot start with; the message says what to fix."""


def flag(key: str) -> str:
    """The flag of a setting: ``max_inflight`` → ``--max-inflight``."""
    return "--" + key.replace("_", "-")


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE.toml",
                        help="a TOML file with the same keys as the flags (flags win)")


def read_toml(path: str) -> dict[str, Any]:
    """The file's settings, keys with underscores; an unreadable file is a ConfigError."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path} is not valid TOML: {exc}") from None
    return {key.replace("-", "_"): value for key, value in data.items()}


def merge(args: argparse.Namespace) -> dict[str, Any]:
    """The TOML file named by ``args.config`` (if any), then every flag that was given."""
    values: dict[str, Any] = {}
    path = getattr(args, "config", None)
    if path:
        values.update(read_toml(path))
    values.update({k: v for k, v in vars(args).items() if v is not None and k != "config"})
    return values


def reject_unknown(values: dict[str, Any], known: Iterable[str]) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")


def check_int(key: str, value: Any, low: int, high: int | None = None, *,
              what: str = "") -> None:
    """``value`` is a whole number from ``low`` to ``high`` (inclusive; None: no upper limit),
    else a ConfigError naming the flag, the value and the limit (``what`` says what the upper
    limit is)."""
    name = f"{flag(key)} {value!r}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} is not a whole number")
    if value < low:
        raise ConfigError(f"{name} is too small: at least {low}")
    if high is not None and value > high:
        why = f" ({what})" if what else ""
        raise ConfigError(f"{name} is too large: at most {high}{why}")
