"""Outgoing gRPC channels to a node's ports, shared by nodes (links to peers) and gateways.

A node's peer links (``dpq.node.transport``) and a gateway's channels to the
nodes (``dpq.gateway.monitor``) take the same options and the same credentials
rule: plaintext without credentials, else TLS (mutual on the peer port, the
credentials from ``dpq.node.planes`` or the gateway's certificate).
"""

from __future__ import annotations

import grpc

#: gRPC messages up to this size: a snapshot in a Promise travels whole.
MAX_MESSAGE_BYTES = 512 << 20
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]


def peer_channel(address: str, creds: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    """A channel to a peer port (a node's link, or a gateway's)."""
    if creds is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(address, creds, options=CHANNEL_OPTIONS)
