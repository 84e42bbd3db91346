"""The two planes of a node, and the credentials each one uses.

* the client plane (``--listen``): ``dpq.v1.Queue``, health, reflection;
* the peer plane (``--peer-listen``): ``dpq.v1.Replication`` only; the nodes'
  Paxos streams and proposals, and the gateways' Propose and WatchHealth.

Every credential a node or a gateway uses comes from :func:`credentials` (the
servers, one per plane) and :func:`peer_channel` (every outgoing channel to a
peer port). Plaintext (``None``) is the only kind this build makes; TLS plugs
in here and nowhere else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from dpq.node.config import ConfigError, NodeConfig
from dpq.node.transport import CHANNEL_OPTIONS

log = logging.getLogger("dpq.node.planes")


@dataclass(frozen=True, slots=True)
class Credentials:
    """``None`` everywhere: plaintext."""

    client_server: grpc.ServerCredentials | None = None  # the --listen port
    peer_server: grpc.ServerCredentials | None = None    # the --peer-listen port
    peer_channel: grpc.ChannelCredentials | None = None  # this node's links to its peers


def credentials(config: NodeConfig) -> Credentials:
    """What each plane of this node uses; raises :class:`ConfigError` for what it cannot."""
    if config.tls:
        # The lead wires dpq.security in here: server credentials for each port
        # (mutual TLS under the cluster CA on the peer port) and channel credentials
        # with this node's certificate for its links.
        raise ConfigError("TLS wiring not in this build: run with --insecure for now")
    if config.insecure:
        log.warning("--insecure: the client port %s and the peer port %s are plaintext and "
                    "unauthenticated; only the cluster id keeps outsiders off the peer port. "
                    "Use TLS (`dpq certs init`) on any network you do not trust.",
                    config.listen, config.peer_listen or "(none)")
    return Credentials()


def peer_channel(address: str, creds: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    """A channel to a peer port (a node's link, or a gateway's)."""
    if creds is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(address, creds, options=CHANNEL_OPTIONS)
