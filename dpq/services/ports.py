"""Exclusive ports: one process per port, and a clear line when a port is taken.

gRPC binds with ``SO_REUSEPORT`` by default, so a second server on a taken
port binds beside the first and the kernel shares connections between them
(two clusters on one port once mixed their Paxos traffic). Every dpq server
turns that off (``EXCLUSIVE``) and probes its address first, so a taken port
is refused with one line naming it, before gRPC logs its own error.
"""

from __future__ import annotations

import errno
import socket

#: gRPC server options for an exclusive bind.
EXCLUSIVE = [("grpc.so_reuseport", 0)]


class PortTaken(OSError):
    """A port another process listens on; the message names the port."""


def split(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → host and port."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def probe_all(addresses: dict[str, str]) -> None:
    """Fail fast, before anything starts, if a port to listen on is taken (by flag)."""
    for flag, address in addresses.items():
        if address:
            probe(address, flag)


def probe(address: str, what: str = "") -> None:
    """Raise :class:`PortTaken` if binding ``address`` would fail because it is in use.

    Binds and closes a socket as a server would (``SO_REUSEADDR``, so connections
    of a previous run in TIME_WAIT do not count; no ``SO_REUSEPORT``). Port 0
    (any free port) is never taken.
    """
    host, port = split(address)
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {address}: {exc.strerror}") from None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    who = f" ({what})" if what else ""
                    raise PortTaken(f"port {port}{who} is taken: another process listens on "
                                    f"{address}") from None
                if exc.errno != errno.EADDRNOTAVAIL:  # e.g. no IPv6 here: gRPC skips it too
                    raise OSError(f"cannot listen on {address}: {exc.strerror}") from None
