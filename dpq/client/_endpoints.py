"""Where calls go: gRPC channels by address, and the endpoint a kind of call uses now.

A target is ``HOST:PORT`` of a gateway or of any node; both serve the same
``dpq.v1.Queue`` API. :class:`Endpoints` sticks to one address until a call to
it fails, then moves on to the next one (or to the leader a node named in its
``UNAVAILABLE`` message, when that address is one of ours). Every channel has
the same credentials: plaintext, or TLS with the bearer token (:func:`security`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

import grpc

from dpq.settings import DEFAULT_GATEWAY
from dpq.v1 import queue_pb2_grpc

#: The endpoint used when none is given and ``DPQ_ADDR`` is unset: the local
#: gateway of ``dpq up``.
DEFAULT_TARGET = DEFAULT_GATEWAY

Targets = str | Sequence[str] | None
PathLike = str | os.PathLike[str]

# gRPC's own reconnect backoff grows to two minutes by default: a node that
# comes back would be refused that long. Retries are the client's job (no
# transparent gRPC retries, which could send an Enqueue twice). No client
# keepalive pings: a server that allows fewer would close the connection.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.enable_retries", 0),
]

_LEADER_HINT = re.compile(r"the leader is at (\S+): retry")


def parse_targets(targets: Targets) -> list[str]:
    """``"a:1,b:2"``, ``["a:1", "b:2"]`` or None (``$DPQ_ADDR``, else :data:`DEFAULT_TARGET`)."""
    if targets is None:
        targets = os.environ.get("DPQ_ADDR") or DEFAULT_TARGET
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    out: list[str] = []
    for item in (t.strip() for t in items):
        if item and item not in out:
            out.append(item)
    if not out:
        raise ValueError(f"no endpoint in targets {targets!r}: give HOST:PORT of a gateway or node")
    return out


def security(tls_dir: PathLike | None = None,
             root_certificates: bytes | PathLike | None = None,
             token: str | None = None) -> grpc.ChannelCredentials | None:
    """The credentials the client connects with, None for plaintext.

    ``tls_dir``: a ``dpq certs init`` folder (its ``ca.pem`` and ``token``);
    ``root_certificates``: the CA as PEM bytes or a PEM file's path; ``token``:
    the bearer token. With none given, ``$DPQ_TLS_DIR`` names the folder.
    Raises :class:`dpq.security.tls.TlsError` for material that cannot be used.
    """
    if tls_dir is None and root_certificates is None and token is None \
            and not os.environ.get("DPQ_TLS_DIR"):
        return None  # plaintext, without importing the TLS machinery
    from dpq.security.tls import client_credentials

    return client_credentials(tls_dir, root_certificates, token)


def leader_hint(details: str) -> str | None:
    """The leader's address a node names in an UNAVAILABLE message, if any."""
    match = _LEADER_HINT.search(details or "")
    return match.group(1) if match else None


class Channels:
    """One ``grpc.aio`` channel per address, made on first use, closed together.

    Lives on the event loop that uses it (grpc.aio channels are bound to one).
    ``credentials`` (see :func:`security`): TLS and the bearer token; None:
    plaintext.
    """

    def __init__(self, credentials: grpc.ChannelCredentials | None = None) -> None:
        self._credentials = credentials
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, queue_pb2_grpc.QueueStub] = {}

    def stub(self, address: str) -> queue_pb2_grpc.QueueStub:
        """The ``dpq.v1.Queue`` stub for ``address``."""
        stub = self._stubs.get(address)
        if stub is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(address, self._credentials,
                                                  options=CHANNEL_OPTIONS)
            self._channels[address] = channel
            stub = self._stubs[address] = queue_pb2_grpc.QueueStub(channel)
        return stub

    async def close(self) -> None:
        """Close every channel (calls in flight are cancelled)."""
        channels, self._channels, self._stubs = self._channels, {}, {}
        for channel in channels.values():
            await channel.close()


class Endpoints:
    """The addresses one kind of call may use, and the one it uses now."""

    def __init__(self, channels: Channels, addresses: Iterable[str]) -> None:
        self.channels = channels
        self._addresses = list(addresses)
        if not self._addresses:
            raise ValueError("Endpoints needs at least one address")
        self._current = 0

    @property
    def addresses(self) -> list[str]:
        """Every address, in the order they are tried."""
        return list(self._addresses)

    def current(self) -> str:
        """The address to call now."""
        return self._addresses[self._current]

    def replace(self, addresses: Iterable[str], current: str | None = None) -> None:
        """Use these addresses from now on, from ``current`` if given, else keeping
        the current one if it stays."""
        new = list(dict.fromkeys(addresses))
        if not new:
            return
        keep = current if current in new else self.current()
        self._addresses = new
        self._current = new.index(keep) if keep in new else 0

    def failed(self, address: str, hint: str | None = None) -> None:
        """A call to ``address`` failed: move on, unless another call already did.

        ``hint`` is the leader a node named; it is tried next if it is ours.
        """
        if self.current() != address:
            return
        if hint is not None and hint in self._addresses and hint != address:
            self._current = self._addresses.index(hint)
        else:
            self._current = (self._current + 1) % len(self._addresses)
