"""A node's configuration: flags, or the same keys in a TOML file (flags win).

Every default is a named constant here; the TOML/flag merging is
:mod:`dpq.settings`, shared with the gateway (:mod:`dpq.gateway.config`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from dpq import settings
from dpq.node import pglag
from dpq.queue import rules, validate
from dpq.queue.validate import Limits
from dpq.services import admission
from dpq.services import limits as port_limits
from dpq.settings import ConfigError

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_MEMORY_BUDGET_MB = 1024
# A heartbeat every 100 ms and an election after 1-2 s of silence (etcd's
# defaults): commits reach followers at once without heartbeats, and a
# two-core machine starved by load must not depose a leader that is only slow.
DEFAULT_TICK_MS = 20
DEFAULT_HEARTBEAT_TICKS = 5
DEFAULT_ELECTION_TICKS = 50
DEFAULT_AGING_STEP_MS = 5_000
DEFAULT_SNAPSHOT_EVERY_SLOTS = 20_000
DEFAULT_WRITER_INTERVAL_MS = 100
DEFAULT_DEAD_AFTER_MS = 5_000
# A PostgreSQL connect or write that takes longer fails and is retried with
# back-off (a frozen server must not hang the writer).
DEFAULT_POSTGRES_TIMEOUT_MS = 10_000
MIN_POSTGRES_TIMEOUT_MS = 100
DEFAULT_LOG_LEVEL = "WARNING"
DEFAULT_REQUEST_LOG_LEVEL = "INFO"


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """The node flags that shape the queue's behaviour."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    dedup_window_ms: int = validate.DEFAULT_DEDUP_WINDOW_MS
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_MB << 20
    wait_for_postgres: bool = False
    max_postgres_lag_slots: int = pglag.DEFAULT_MAX_LAG_SLOTS
    limits: validate.Limits = validate.DEFAULT_LIMITS


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: int
    listen: str  # the client port: dpq.v1.Queue, health, reflection
    peers: dict[int, str]  # every node's peer port (this one's = peer_listen)
    data_dir: str
    dsn: str | None = None
    peer_listen: str | None = None  # the peer port: dpq.v1.Replication only
    metrics_listen: str | None = None  # GET /metrics (dpq.services.metrics); None: off
    # TLS material (dpq certs init); wired in dpq.node.planes.
    tls_dir: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    token_file: str | None = None
    insecure: bool = False  # plaintext, unauthenticated planes for a multi-node cluster
    rejoin: bool = False  # the data folder was lost: start as a learner (dpq.node.identity)
    tick_ms: int = DEFAULT_TICK_MS
    heartbeat_ticks: int = DEFAULT_HEARTBEAT_TICKS
    election_ticks: int = DEFAULT_ELECTION_TICKS
    aging_step_ms: int = DEFAULT_AGING_STEP_MS
    snapshot_every_slots: int = DEFAULT_SNAPSHOT_EVERY_SLOTS
    writer_interval_ms: int = DEFAULT_WRITER_INTERVAL_MS
    dead_after_s: float = DEFAULT_DEAD_AFTER_MS / 1000
    postgres_timeout_ms: int = DEFAULT_POSTGRES_TIMEOUT_MS
    log_level: str = DEFAULT_LOG_LEVEL
    request_log_level: str = DEFAULT_REQUEST_LOG_LEVEL
    policy: QueuePolicy = field(default_factory=QueuePolicy)
    server_limits: port_limits.ServerLimits = field(default_factory=port_limits.ServerLimits)
    admission: admission.AdmissionLimits = field(default_factory=admission.AdmissionLimits)

    def __post_init__(self) -> None:
        if self.node_id not in self.peers:
            raise ConfigError(
                f"--peers must name this node: {self.node_id} is not in {sorted(self.peers)}")
        own = self.peers[self.node_id]
        if self.rejoin and len(self.peers) == 1:
            raise ConfigError(
                "--rejoin catches a node up from its peers, and a single node has none: restore "
                "its data folder, or start a new cluster with an empty one and without --rejoin")
        if len(self.peers) > 1 and not self.peer_listen:
            raise ConfigError(
                f"a cluster of {len(self.peers)} nodes needs --peer-listen HOST:PORT: peers talk "
                f"on a port of their own, apart from the clients' --listen")
        if self.peer_listen and own and not _same_port(own, self.peer_listen):
            raise ConfigError(
                f"--peers gives node {self.node_id} the peer address {own}, "
                f"but its --peer-listen is {self.peer_listen}")
        for other in (self.listen, self.peer_listen):
            if self.metrics_listen and other and _clash(self.metrics_listen, other):
                raise ConfigError(f"--metrics-listen {self.metrics_listen} and {other} must be "
                                  "two ports")
        if self.peer_listen and _clash(self.listen, self.peer_listen):
            raise ConfigError(
                f"--listen {self.listen} and --peer-listen {self.peer_listen} must be two ports: "
                "clients and peers never share one")
        if len(self.peers) > 1 and not self.dsn:
            raise ConfigError(
                f"a cluster of {len(self.peers)} nodes needs --dsn: every node writes to one "
                "shared PostgreSQL database (only a single-node cluster may run on the embedded "
                "server)")
        if self.postgres_timeout_ms < MIN_POSTGRES_TIMEOUT_MS:
            raise ConfigError(f"--postgres-timeout-ms {self.postgres_timeout_ms} is too short: "
                              f"at least {MIN_POSTGRES_TIMEOUT_MS}")
        if self.snapshot_every_slots < 1:
            raise ConfigError(f"--snapshot-every-slots {self.snapshot_every_slots} is too small: "
                              "at least 1 (a snapshot after that many applied slots)")
        if self.policy.max_postgres_lag_slots < 0:
            raise ConfigError(f"--max-postgres-lag-slots {self.policy.max_postgres_lag_slots} "
                              "is negative: give a number of slots, or 0 for no limit")
        if len(self.peers) % 2 == 0:
            raise ConfigError(
                f"{len(self.peers)} nodes tolerate no more failures than {len(self.peers) - 1}: "
                "use an odd number (1, 3 or 5)")
        explicit = [self.tls_cert, self.tls_key, self.tls_ca]
        if any(explicit) and not all(explicit) and not self.tls_dir:
            raise ConfigError("--tls-cert, --tls-key and --tls-ca go together (or give --tls-dir)")
        if self.tls and self.insecure:
            raise ConfigError("--insecure turns TLS off: give it or the TLS flags, not both")
        if len(self.peers) > 1 and not self.tls and not self.insecure:
            raise ConfigError(
                f"a cluster of {len(self.peers)} nodes needs TLS: create the material with "
                f"`dpq certs init DIR --nodes {len(self.peers)}` and pass --tls-dir DIR, or run "
                "plaintext on a trusted network with --insecure")

    @property
    def tls(self) -> bool:
        """TLS material was given (a folder or explicit files)."""
        return bool(self.tls_dir or self.tls_cert or self.tls_key or self.tls_ca or self.token_file)


def _same_port(a: str, b: str) -> bool:
    return a.rpartition(":")[2] == b.rpartition(":")[2]


_ANY_HOST = {"", "0.0.0.0", "[::]", "::", "*"}


def _clash(a: str, b: str) -> bool:
    """Two listen addresses that would be one socket."""
    host_a, _, port_a = a.rpartition(":")
    host_b, _, port_b = b.rpartition(":")
    return port_a == port_b and (host_a == host_b or {host_a, host_b} & _ANY_HOST != set())


def parse_peers(text: str) -> dict[int, str]:
    """``1=127.0.0.1:7101,2=127.0.0.1:7102`` → ``{1: "127.0.0.1:7101", ...}``."""
    peers: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node, sep, address = item.partition("=")
        if not sep or not node.strip().isdigit() or ":" not in address:
            raise ConfigError(f"--peers item {item!r} is not ID=HOST:PORT (e.g. 1=127.0.0.1:7101)")
        if int(node) in peers:
            raise ConfigError(f"--peers names node {node} twice")
        peers[int(node)] = address.strip()
    if not peers:
        raise ConfigError("--peers is empty: name every node of the cluster, this one included")
    return peers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    settings.add_config_argument(parser)
    parser.add_argument("--id", type=int, dest="node_id", help="this node's id (as in --peers)")
    parser.add_argument("--listen",
                        help="HOST:PORT for clients (dpq.v1.Queue), e.g. 127.0.0.1:7101")
    parser.add_argument("--peer-listen",
                        help="HOST:PORT for the other nodes (dpq.v1.Replication only), "
                             "e.g. 127.0.0.1:7111; not needed by a single node")
    parser.add_argument("--peers",
                        help="every node's peer port: 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT "
                                        "(default: this node alone)")
    parser.add_argument("--metrics-listen",
                        help="HOST:PORT to serve Prometheus metrics on (GET /metrics, plain "
                             "HTTP, read-only): loopback or a private network (off)")
    parser.add_argument("--data-dir", help="where the node keeps its log, snapshots and logs")
    parser.add_argument("--dsn", help="PostgreSQL URL, the same for every node (default for a "
                                      "single node: an embedded server in the data dir)")
    parser.add_argument("--max-attempts", type=int, help="deliveries before a job is dead "
                        f"({DEFAULT_MAX_ATTEMPTS})")
    parser.add_argument("--dedup-window-ms", type=int,
                        help="how long a dedup key is remembered "
                             f"({validate.DEFAULT_DEDUP_WINDOW_MS} = 1 h)")
    parser.add_argument("--aging-step-ms", type=int,
                        help="waiting time worth one priority level "
                             f"({DEFAULT_AGING_STEP_MS}; 0 = strict priority)")
    parser.add_argument("--max-payload-bytes", type=int, help="largest payload accepted "
                        f"({validate.DEFAULT_MAX_PAYLOAD_BYTES >> 20} MiB)")
    parser.add_argument("--memory-budget-mb", type=int,
                        help="memory the held jobs may cost (payloads, names, keys, per-job "
                             f"structures) before RESOURCE_EXHAUSTED ({DEFAULT_MEMORY_BUDGET_MB})")
    parser.add_argument("--wait-for-postgres", action="store_true", default=None,
                        help="Enqueue returns only once PostgreSQL has the jobs")
    parser.add_argument("--postgres-timeout-ms", type=int,
                        help="a PostgreSQL connect, statement or write batch that takes longer "
                             "fails and is retried with back-off; big batches get 1 s more per "
                             f"20,000 rows ({DEFAULT_POSTGRES_TIMEOUT_MS})")
    parser.add_argument("--max-postgres-lag-slots", type=int,
                        help="how many log slots PostgreSQL may fall behind (while it is down or "
                             "slow) before Enqueue answers UNAVAILABLE; acks and leases still "
                             f"work; 0 = no limit ({pglag.DEFAULT_MAX_LAG_SLOTS})")
    parser.add_argument("--snapshot-every-slots", type=int,
                        help="applied slots between two snapshots; the log before a snapshot is "
                             "dropped, and a follower that needs it catches up by snapshot "
                             f"({DEFAULT_SNAPSHOT_EVERY_SLOTS})")
    parser.add_argument("--tick-ms", type=int, help=f"Paxos clock tick ({DEFAULT_TICK_MS})")
    parser.add_argument("--election-ticks", type=int,
                        help="ticks without a leader before an election "
                             f"({DEFAULT_ELECTION_TICKS})")
    parser.add_argument("--heartbeat-ticks", type=int, help="ticks between leader heartbeats "
                        f"({DEFAULT_HEARTBEAT_TICKS})")
    parser.add_argument("--dead-after-ms", type=int,
                        help="a node unreachable this long has its jobs moved to others "
                             f"({DEFAULT_DEAD_AFTER_MS})")
    parser.add_argument("--tls-dir", help="TLS material from `dpq certs init DIR` (ca.pem, "
                                          "node-<id>.pem, node-<id>-key.pem, token)")
    parser.add_argument("--tls-cert", help="this node's certificate (PEM), instead of --tls-dir")
    parser.add_argument("--tls-key", help="its private key (PEM)")
    parser.add_argument("--tls-ca", help="the cluster CA certificate (PEM)")
    parser.add_argument("--token-file", help="the clients' bearer token")
    parser.add_argument("--insecure", action="store_true", default=None,
                        help="plaintext and unauthenticated peer and client ports, for a trusted "
                             "network (a multi-node cluster needs this or TLS)")
    parser.add_argument("--rejoin", action="store_true", default=None,
                        help="this node lost its data folder (a new disk): start it empty as a "
                             "non-voting learner that catches up and then votes again")
    parser.add_argument("--log-level", help=f"error log level ({DEFAULT_LOG_LEVEL})")
    parser.add_argument("--request-log-level", help="request log level "
                        f"({DEFAULT_REQUEST_LOG_LEVEL}; WARNING silences it)")
    port_limits.add_arguments(parser)
    admission.add_arguments(parser)


def from_arguments(args: argparse.Namespace) -> NodeConfig:
    values = settings.merge(args)
    if isinstance(values.get("peers"), str):
        values["peers"] = parse_peers(values["peers"])
    elif isinstance(values.get("peers"), dict):
        values["peers"] = {int(k): v for k, v in values["peers"].items()}
    for required in ("node_id", "listen", "data_dir"):
        if required not in values:
            flag = required.replace("_", "-").replace("node-id", "id")
            raise ConfigError(f"--{flag} is required")
    if "peers" not in values:  # a single node
        values["peers"] = {values["node_id"]: values.get("peer_listen") or ""}
    default = QueuePolicy()
    limits = Limits(max_payload_bytes=values.pop("max_payload_bytes",
                                                 default.limits.max_payload_bytes))
    # checked here, before the request limit derived from them (the gateway checks the same)
    settings.check_int("max_payload_bytes", limits.max_payload_bytes, 1, rules.MAX_PAYLOAD_BYTES,
                       what="the most any node applies")
    settings.check_int("dedup_window_ms", values.get("dedup_window_ms", default.dedup_window_ms),
                       0, limits.max_dedup_window_ms, what="366 days")
    policy = QueuePolicy(
        max_attempts=values.pop("max_attempts", default.max_attempts),
        dedup_window_ms=values.pop("dedup_window_ms", default.dedup_window_ms),
        memory_budget_bytes=values.pop("memory_budget_mb", default.memory_budget_bytes >> 20) << 20,
        wait_for_postgres=bool(values.pop("wait_for_postgres", False)),
        max_postgres_lag_slots=values.pop("max_postgres_lag_slots",
                                          default.max_postgres_lag_slots),
        limits=limits,
    )
    try:
        server_limits = port_limits.from_values(values, limits.max_payload_bytes)
        admission_limits = admission.from_values(values)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if "dead_after_ms" in values:
        values["dead_after_s"] = values.pop("dead_after_ms") / 1000
    settings.reject_unknown(values, NodeConfig.__dataclass_fields__)
    return NodeConfig(policy=policy, server_limits=server_limits, admission=admission_limits,
                      **values)
