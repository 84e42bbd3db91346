"""Who a dpq certificate belongs to: a role (node, gateway, client) and, for a node, its id.

A certificate names its holder twice: the subject common name (``dpq-node-2``,
``dpq-gateway``, ``dpq-client``) and a URI subject alternative name
(``dpq://node/2``, ``dpq://gateway``, ``dpq://client``). The URI is what is
read back; the common name is for people reading ``openssl x509`` output. Both
are written by :mod:`dpq.security.certs` and only certificates signed by the
cluster CA are ever read here, so the names can be trusted.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

from cryptography import x509

Role = Literal["node", "gateway", "client"]
ROLES: tuple[Role, ...] = ("node", "gateway", "client")

URI_SCHEME = "dpq"
_URI = re.compile(r"^dpq://(node)/([1-9][0-9]{0,8})$|^dpq://(gateway|client)$")


@dataclass(frozen=True, slots=True)
class Identity:
    """What a certificate says: ``role`` and, for a node, ``node_id`` (else None)."""

    role: Role
    node_id: int | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r} is not one of {', '.join(ROLES)}")
        if (self.role == "node") != (self.node_id is not None):
            raise ValueError(f"node_id {self.node_id!r} does not fit role {self.role!r}: "
                             "a node has an id, a gateway or client has none")
        if self.node_id is not None and self.node_id < 1:
            raise ValueError(f"node_id {self.node_id} is not a positive integer")

    @property
    def common_name(self) -> str:
        """``dpq-node-<id>``, ``dpq-gateway`` or ``dpq-client``."""
        return f"dpq-node-{self.node_id}" if self.role == "node" else f"dpq-{self.role}"

    @property
    def uri(self) -> str:
        """``dpq://node/<id>``, ``dpq://gateway`` or ``dpq://client``."""
        return f"dpq://node/{self.node_id}" if self.role == "node" else f"dpq://{self.role}"

    def __str__(self) -> str:
        return f"node {self.node_id}" if self.role == "node" else self.role


def from_uri(uri: str) -> Identity | None:
    """The identity a ``dpq://`` URI names, or None for any other URI."""
    match = _URI.match(uri)
    if match is None:
        return None
    if match.group(1):
        return Identity("node", int(match.group(2)))
    return Identity(match.group(3))


def of_certificate(cert: x509.Certificate) -> Identity | None:
    """The identity in a certificate's ``dpq://`` URI SAN; None if it has none (or two)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    found = {i for i in map(from_uri, san.get_values_for_type(x509.UniformResourceIdentifier))
             if i is not None}
    return found.pop() if len(found) == 1 else None


@functools.lru_cache(maxsize=64)
def of_pem(pem: bytes) -> Identity | None:
    """:func:`of_certificate` of a PEM certificate (cached: peers present the same few)."""
    try:
        return of_certificate(x509.load_pem_x509_certificate(pem))
    except ValueError:
        return None
