"""A node's configuration: flags, or the same keys in a TOML file."""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import dataclass, field

from dpq.node.operations import QueuePolicy
from dpq.queue.validate import Limits
from dpq.services import admission
from dpq.services import limits as port_limits


class ConfigError(ValueError):
    """A configuration a node cannot start with; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: int
    listen: str
    peers: dict[int, str]
    data_dir: str
    dsn: str | None = None
    # A heartbeat every 100 ms and an election after 1-2 s of silence (etcd's
    # defaults): commits reach followers at once without heartbeats, and a
    # two-core machine starved by load must not depose a leader that is only slow.
    tick_ms: int = 20
    heartbeat_ticks: int = 5
    election_ticks: int = 50
    aging_step_ms: int = 5_000
    snapshot_every_slots: int = 20_000
    writer_interval_ms: int = 100
    dead_after_s: float = 5.0
    log_level: str = "WARNING"
    request_log_level: str = "INFO"
    policy: QueuePolicy = field(default_factory=QueuePolicy)
    server_limits: port_limits.ServerLimits = field(default_factory=port_limits.ServerLimits)
    admission: admission.AdmissionLimits = field(default_factory=admission.AdmissionLimits)

    def __post_init__(self) -> None:
        if self.node_id not in self.peers:
            raise ConfigError(
                f"--peers must name this node: {self.node_id} is not in {sorted(self.peers)}")
        if self.peers[self.node_id] != self.listen and not _same_port(self.peers[self.node_id], self.listen):
            raise ConfigError(
                f"--peers gives node {self.node_id} the address {self.peers[self.node_id]}, "
                f"but it listens on {self.listen}")
        if len(self.peers) > 1 and not self.dsn:
            raise ConfigError(
                f"a cluster of {len(self.peers)} nodes needs --dsn: every node writes to one shared "
                "PostgreSQL database (only a single-node cluster may run on the embedded server)")
        if len(self.peers) % 2 == 0:
            raise ConfigError(
                f"{len(self.peers)} nodes tolerate no more failures than {len(self.peers) - 1}: "
                "use an odd number (1, 3 or 5)")


def _same_port(a: str, b: str) -> bool:
    return a.rpartition(":")[2] == b.rpartition(":")[2]


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
    parser.add_argument("--config", help="a TOML file with the same keys as the flags (flags win)")
    parser.add_argument("--id", type=int, dest="node_id", help="this node's id (as in --peers)")
    parser.add_argument("--listen", help="HOST:PORT for clients and peers, e.g. 127.0.0.1:7101")
    parser.add_argument("--peers", help="every node: 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT")
    parser.add_argument("--data-dir", help="where the node keeps its log, snapshots and logs")
    parser.add_argument("--dsn", help="PostgreSQL URL, the same for every node "
                                      "(default for a single node: an embedded server in the data dir)")
    parser.add_argument("--max-attempts", type=int, help="deliveries before a job is dead (5)")
    parser.add_argument("--dedup-window-ms", type=int, help="how long a dedup key is remembered (1 h)")
    parser.add_argument("--aging-step-ms", type=int,
                        help="waiting time worth one priority level (5000; 0 = strict priority)")
    parser.add_argument("--max-payload-bytes", type=int, help="largest payload accepted (1 MiB)")
    parser.add_argument("--memory-budget-mb", type=int, help="payload bytes held before RESOURCE_EXHAUSTED (1024)")
    parser.add_argument("--wait-for-postgres", action="store_true", default=None,
                        help="Enqueue returns only once PostgreSQL has the jobs")
    parser.add_argument("--tick-ms", type=int, help="Paxos clock tick (20)")
    parser.add_argument("--election-ticks", type=int, help="ticks without a leader before an election (50)")
    parser.add_argument("--heartbeat-ticks", type=int, help="ticks between leader heartbeats (5)")
    parser.add_argument("--dead-after-ms", type=int,
                        help="a node unreachable this long has its jobs moved to others (5000)")
    parser.add_argument("--log-level", help="error log level (WARNING)")
    parser.add_argument("--request-log-level", help="request log level (INFO; WARNING silences it)")
    port_limits.add_arguments(parser)
    admission.add_arguments(parser)


def from_arguments(args: argparse.Namespace) -> NodeConfig:
    values: dict = {}
    if args.config:
        with open(args.config, "rb") as f:
            values.update({k.replace("-", "_"): v for k, v in tomllib.load(f).items()})
    values.update({k: v for k, v in vars(args).items() if v is not None and k != "config"})
    if isinstance(values.get("peers"), str):
        values["peers"] = parse_peers(values["peers"])
    elif isinstance(values.get("peers"), dict):
        values["peers"] = {int(k): v for k, v in values["peers"].items()}
    for required in ("node_id", "listen", "peers", "data_dir"):
        if required not in values:
            raise ConfigError(f"--{required.replace('_', '-').replace('node-id', 'id')} is required")
    default = QueuePolicy()
    limits = Limits(max_payload_bytes=values.pop("max_payload_bytes", default.limits.max_payload_bytes))
    policy = QueuePolicy(
        max_attempts=values.pop("max_attempts", default.max_attempts),
        dedup_window_ms=values.pop("dedup_window_ms", default.dedup_window_ms),
        memory_budget_bytes=values.pop("memory_budget_mb", default.memory_budget_bytes >> 20) << 20,
        wait_for_postgres=bool(values.pop("wait_for_postgres", False)),
        limits=limits,
    )
    try:
        server_limits = port_limits.from_values(values, limits.max_payload_bytes)
        admission_limits = admission.from_values(values)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if "dead_after_ms" in values:
        values["dead_after_s"] = values.pop("dead_after_ms") / 1000
    known = set(NodeConfig.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    return NodeConfig(policy=policy, server_limits=server_limits, admission=admission_limits,
                      **values)
