"""A gateway's configuration: flags, or the same keys in a TOML file (flags win).

``dpq-gateway --config gateway.toml`` reads, for example::

    listen = "127.0.0.1:7100"
    nodes = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]  # or "a:1,b:2"
    max-inflight = 8
    tls-dir = "certs"

Every default is a named constant here (the ones a node shares live in
:mod:`dpq.queue.validate`); the merging is :mod:`dpq.settings`, as the node's.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dpq import settings
from dpq.queue import rules, validate
from dpq.services import admission
from dpq.services import limits as port_limits
from dpq.settings import ConfigError

if TYPE_CHECKING:
    from dpq.security.tls import TlsMaterial

DEFAULT_LISTEN = settings.DEFAULT_GATEWAY
#: Proposals in flight to the leader at once; requests arriving meanwhile ride
#: together in the next one.
DEFAULT_MAX_INFLIGHT = 4
#: How often each node's WatchHealth stream reports (no flag).
DEFAULT_HEALTH_INTERVAL_MS = 250
DEFAULT_LOG_LEVEL = "WARNING"
DEFAULT_REQUEST_LOG_LEVEL = "INFO"
#: The TLS options (dpq.security.flags) as settings.
TLS_KEYS = ("tls_dir", "tls_cert", "tls_key", "tls_ca", "token_file")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    listen: str
    nodes: list[str]  # the nodes' client addresses (their --listen)
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    dedup_window_ms: int = validate.DEFAULT_DEDUP_WINDOW_MS
    health_interval_ms: int = DEFAULT_HEALTH_INTERVAL_MS
    max_payload_bytes: int = validate.DEFAULT_MAX_PAYLOAD_BYTES
    #: The gateway certificate, the cluster CA and the clients' token; None: plaintext.
    tls: TlsMaterial | None = None
    server_limits: port_limits.ServerLimits = field(default_factory=port_limits.ServerLimits)
    admission: admission.AdmissionLimits = field(default_factory=admission.AdmissionLimits)
    insecure: bool = False  # plaintext said outright (also the default without TLS)
    log_dir: str | None = None
    #: HOST:PORT of the web console (dpq.console); None: no console.
    http_listen: str | None = None
    #: GET /metrics (dpq.services.metrics) on this HOST:PORT; None: off.
    metrics_listen: str | None = None
    log_level: str = DEFAULT_LOG_LEVEL
    request_log_level: str = DEFAULT_REQUEST_LOG_LEVEL

    def __post_init__(self) -> None:
        if not isinstance(self.listen, str) or ":" not in self.listen:
            raise ConfigError(f"--listen {self.listen!r} is not HOST:PORT")
        if self.http_listen is not None and (not isinstance(self.http_listen, str)
                                             or ":" not in self.http_listen):
            raise ConfigError(f"--http-listen {self.http_listen!r} is not HOST:PORT")
        if not self.nodes or any(not isinstance(a, str) or ":" not in a for a in self.nodes):
            raise ConfigError(f"--nodes {','.join(map(str, self.nodes))!r} is not a list of "
                              "HOST:PORT")
        settings.check_int("max_inflight", self.max_inflight, 1)
        settings.check_int("dedup_window_ms", self.dedup_window_ms, 0,
                           validate.DEFAULT_LIMITS.max_dedup_window_ms, what="366 days")
        _check_payload(self.max_payload_bytes)
        settings.check_int("health_interval_ms", self.health_interval_ms, 1)
        if self.tls is not None and self.insecure:
            raise ConfigError("--insecure turns TLS off: give it or the TLS flags, not both")
        if self.metrics_listen is not None and (not isinstance(self.metrics_listen, str)
                                                or ":" not in self.metrics_listen):
            raise ConfigError(f"--metrics-listen {self.metrics_listen!r} is not HOST:PORT")


def _check_payload(value: Any) -> None:
    settings.check_int("max_payload_bytes", value, 1, rules.MAX_PAYLOAD_BYTES,
                       what="the most any node applies")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags, with ``None`` defaults (so the TOML file can set them too)."""
    from dpq.security import flags

    settings.add_config_argument(parser)
    parser.add_argument("--listen", help=f"HOST:PORT to serve on ({DEFAULT_LISTEN})")
    parser.add_argument("--nodes",
                        help="the nodes' client addresses (their --listen), comma-separated; "
                             "each node's peer port is learnt from its ClusterInfo (required)")
    parser.add_argument("--max-inflight", type=int,
                        help="proposals in flight to the leader at once; requests arriving "
                             f"meanwhile ride together in the next one ({DEFAULT_MAX_INFLIGHT})")
    parser.add_argument("--dedup-window-ms", type=int,
                        help="how long a dedup key is remembered "
                             f"({validate.DEFAULT_DEDUP_WINDOW_MS} = 1 h)")
    parser.add_argument("--max-payload-bytes", type=int,
                        help=f"largest payload ({validate.DEFAULT_MAX_PAYLOAD_BYTES >> 20} MiB)")
    parser.add_argument("--http-listen",
                        help="HOST:PORT of the web console (a page and its JSON API; "
                             "off by default)")
    parser.add_argument("--metrics-listen",
                        help="HOST:PORT to serve Prometheus metrics on (GET /metrics, plain "
                             "HTTP, read-only): loopback or a private network (off)")
    parser.add_argument("--log-dir", help="write errors.log and requests.log here too")
    parser.add_argument("--log-level", help=f"error log level ({DEFAULT_LOG_LEVEL})")
    parser.add_argument("--request-log-level",
                        help=f"request log level ({DEFAULT_REQUEST_LOG_LEVEL})")
    parser.add_argument("--insecure", action="store_true", default=None,
                        help="plaintext on both sides, on a trusted network (the default "
                             "without TLS flags, said in a warning)")
    flags.add_arguments(parser)
    port_limits.add_arguments(parser, peer=False)
    admission.add_arguments(parser)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dpq-gateway",
        description="Buffer and batch enqueues, spread jobs over the nodes by live health, "
        "and route the other calls. Example:\n  dpq-gateway --listen 127.0.0.1:7100 "
        "--nodes 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103\n"
        "Every flag can be given in a TOML file instead (--config FILE.toml).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    return p


def from_args(argv: list[str] | None = None) -> GatewayConfig:
    """Parse ``argv`` (argparse exits on an unknown flag); a bad setting is a ConfigError."""
    return from_arguments(parser().parse_args(argv))


def from_arguments(args: argparse.Namespace) -> GatewayConfig:
    return load(settings.merge(args))


def load(values: dict[str, Any]) -> GatewayConfig:
    """A config from merged settings (keys with underscores), checked; loads the TLS material."""
    from dpq.security import flags
    from dpq.security.errors import TlsError

    values = dict(values)
    if "nodes" not in values:
        raise ConfigError("--nodes is required: the nodes' client addresses, comma-separated "
                          "(or `nodes = [...]` in the --config file)")
    nodes = values.pop("nodes")
    if isinstance(nodes, str):
        nodes = [a.strip() for a in nodes.split(",") if a.strip()]
    elif not isinstance(nodes, list):
        raise ConfigError(f"--nodes {nodes!r} is not a list of HOST:PORT")
    tls_given = {key: values.pop(key, None) for key in TLS_KEYS}
    # before the request limit, which is derived from it
    _check_payload(values.get("max_payload_bytes", validate.DEFAULT_MAX_PAYLOAD_BYTES))
    try:
        server_limits = port_limits.from_values(
            values, values.get("max_payload_bytes", validate.DEFAULT_MAX_PAYLOAD_BYTES))
        admission_limits = admission.from_values(values)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings.reject_unknown(values, set(GatewayConfig.__dataclass_fields__)
                            - {"nodes", "tls", "server_limits", "admission",
                               "health_interval_ms"})
    try:
        material = flags.from_arguments(argparse.Namespace(**tls_given), "gateway")
    except TlsError as exc:
        raise ConfigError(str(exc)) from None
    return GatewayConfig(nodes=nodes, tls=material, server_limits=server_limits,
                         admission=admission_limits,
                         **{"listen": DEFAULT_LISTEN, **values})
