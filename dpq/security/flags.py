"""The TLS options ``dpq-node`` and ``dpq-gateway`` share, and the material they name.

``--tls-dir DIR`` (a ``dpq certs init`` folder) or the four files one by one:
``--tls-cert``, ``--tls-key``, ``--tls-ca``, ``--token-file``. A file given on
its own overrides the folder's. No option at all: no TLS (the caller decides
whether that is allowed).
"""

from __future__ import annotations

import argparse
import os

from dpq.security.certs import CA_FILE, TOKEN_FILE, cert_file, key_file
from dpq.security.identity import Identity, Role
from dpq.security.tls import TlsError, TlsMaterial

_FILE_FLAGS = (("tls_cert", "--tls-cert"), ("tls_key", "--tls-key"), ("tls_ca", "--tls-ca"),
               ("token_file", "--token-file"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--tls-dir``, ``--tls-cert``, ``--tls-key``, ``--tls-ca`` and ``--token-file``."""
    group = parser.add_argument_group(
        "TLS", "mutual TLS on the peer port, TLS and a bearer token on the client port; "
        "make the material with `dpq certs init DIR --nodes N`")
    group.add_argument("--tls-dir", metavar="DIR",
                       help="a `dpq certs init` folder: ca.pem, this process's certificate "
                            "and key, token")
    group.add_argument("--tls-cert", metavar="FILE", help="this process's certificate (PEM)")
    group.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    group.add_argument("--tls-ca", metavar="FILE", help="the cluster CA certificate (PEM)")
    group.add_argument("--token-file", metavar="FILE", help="the clients' bearer token")


def from_arguments(args: argparse.Namespace, role: Role,
                   node_id: int | None = None) -> TlsMaterial | None:
    """The material the options name for ``role`` (``"node"`` with ``node_id``, or
    ``"gateway"``), checked; None when no TLS option was given.

    Raises :class:`TlsError` naming the missing option or the bad file.
    """
    given = {attr: getattr(args, attr, None) for attr, _ in _FILE_FLAGS}
    directory = getattr(args, "tls_dir", None)
    if directory is None and not any(given.values()):
        return None
    if directory is not None:
        expected = Identity(role, node_id if role == "node" else None)
        defaults = {"tls_cert": cert_file(expected), "tls_key": key_file(expected),
                    "tls_ca": CA_FILE, "token_file": TOKEN_FILE}
        given = {attr: value or os.path.join(directory, defaults[attr])
                 for attr, value in given.items()}
    missing = [flag for attr, flag in _FILE_FLAGS if not given[attr]]
    if missing:
        raise TlsError(f"TLS needs {', '.join(missing)} too (or --tls-dir DIR from "
                       "`dpq certs init`)")
    material = TlsMaterial.from_files(given["tls_cert"], given["tls_key"], given["tls_ca"],
                                      given["token_file"])
    if material.identity is None or material.identity.role != role or (
            role == "node" and material.identity.node_id != node_id):
        want = f"node {node_id}" if role == "node" else role
        raise TlsError(f"{given['tls_cert']} is the certificate of "
                       f"{material.identity or 'no dpq holder'}, not of {want}")
    return material
