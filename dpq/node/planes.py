"""The two planes of a node, and the credentials each one uses.

* the client plane (``--listen``): ``dpq.v1.Queue``, health, reflection;
* the peer plane (``--peer-listen``): ``dpq.v1.Replication`` only; the nodes'
  Paxos streams and proposals, and the gateways' Propose and WatchHealth.

Every credential a node or a gateway uses comes from :func:`credentials` (the
servers, one per plane, and their interceptors) and goes to
:func:`dpq.services.channels.peer_channel` (every outgoing channel to a peer
port). With TLS material (``--tls-dir`` or the explicit files):

* peer port: mutual TLS under the cluster CA; only node and gateway
  certificates get past :class:`~dpq.security.auth.PeerRoleInterceptor`, and
  ``Stream`` only node certificates (the servicer then checks that each batch's
  sender is the node the certificate names);
* client port: TLS with the node's certificate, and the clients' bearer token
  (:class:`~dpq.security.auth.TokenInterceptor`, after the request log so
  refused calls are logged too);
* links to peers: mutual TLS with this node's certificate.

Without it (``--insecure``, or a single node): plaintext everywhere.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import grpc

from dpq.node.config import ConfigError, NodeConfig

log = logging.getLogger("dpq.node.planes")

STREAM_METHOD = "/dpq.v1.Replication/Stream"


@dataclass(frozen=True, slots=True)
class Credentials:
    """``None`` and no interceptors everywhere: plaintext."""

    client_server: grpc.ServerCredentials | None = None  # the --listen port
    peer_server: grpc.ServerCredentials | None = None    # the --peer-listen port
    peer_channel: grpc.ChannelCredentials | None = None  # this node's links to its peers
    client_interceptors: tuple[grpc.aio.ServerInterceptor, ...] = ()
    peer_interceptors: tuple[grpc.aio.ServerInterceptor, ...] = ()

    @property
    def mutual_tls(self) -> bool:
        """Peers present verified certificates: their identity can be checked."""
        return self.peer_server is not None


def credentials(config: NodeConfig) -> Credentials:
    """What each plane of this node uses; raises :class:`ConfigError` for what it cannot."""
    if config.tls:
        from dpq.security import flags
        from dpq.security.errors import TlsError

        given = argparse.Namespace(tls_dir=config.tls_dir, tls_cert=config.tls_cert,
                                   tls_key=config.tls_key, tls_ca=config.tls_ca,
                                   token_file=config.token_file)
        try:
            material = flags.from_arguments(given, "node", config.node_id)
        except TlsError as exc:
            raise ConfigError(str(exc)) from None
        assert material is not None
        return tls_credentials(material)
    if config.insecure:
        log.warning("--insecure: the client port %s and the peer port %s are plaintext and "
                    "unauthenticated; only the cluster id keeps outsiders off the peer port. "
                    "Use TLS (`dpq certs init`) on any network you do not trust.",
                    config.listen, config.peer_listen or "(none)")
    return Credentials()


def tls_credentials(material) -> Credentials:
    """The credentials and interceptors of a node with ``material`` (a
    :class:`~dpq.security.tls.TlsMaterial` of a node certificate and a token)."""
    from dpq.security import auth, tls

    if not material.token:
        raise ConfigError("TLS needs the clients' bearer token: give --token-file "
                          "(or a --tls-dir with a token file)")
    return Credentials(
        client_server=tls.server_credentials(material, require_client_cert=False),
        peer_server=tls.server_credentials(material, require_client_cert=True),
        peer_channel=tls.peer_channel_credentials(material),
        client_interceptors=(auth.TokenInterceptor(material.token),),
        # The CA signs client.pem too: a client certificate must not reach Replication.
        peer_interceptors=(auth.PeerRoleInterceptor(
            ("node", "gateway"), method_roles={STREAM_METHOD: ("node",)}),))
