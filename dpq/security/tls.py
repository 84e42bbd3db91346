"""A process's TLS material, loaded and checked, and the gRPC credentials made from it.

:class:`TlsMaterial` is read once at start (``from_dir`` or ``from_files``); what
is wrong with it is a :class:`TlsError` whose one line names the file: missing,
unreadable, not PEM, a key that does not fit its certificate, a certificate
the CA did not sign, one that has expired, or one that names another holder.
gRPC itself would only fail later, at the first handshake, with a vaguer word.

- :func:`server_credentials`: TLS for a server port; ``require_client_cert``
  makes it mutual (the peer port).
- :func:`peer_channel_credentials`: mutual TLS to a peer port (node → node,
  gateway → node): verify the server under the cluster CA, present our own
  certificate.
- :func:`client_channel_credentials`: TLS to a client port plus the bearer
  token on every call.
- :func:`client_credentials`: what the client library and the CLI use:
  ``tls_dir`` / ``root_certificates`` / ``token`` / ``$DPQ_TLS_DIR`` → credentials
  or None (plaintext).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from dpq.security import identity as identities
from dpq.security.certs import CA_FILE, TOKEN_FILE, cert_file, key_file
from dpq.security.errors import TlsError
from dpq.security.identity import Identity, Role

#: The environment variable naming a TLS folder for clients (``dpq certs init`` output).
TLS_DIR_ENV = "DPQ_TLS_DIR"

PathLike = str | os.PathLike[str]

__all__ = ["TLS_DIR_ENV", "TlsError", "TlsMaterial", "client_channel_credentials",
           "client_credentials", "peer_channel_credentials", "read_token", "server_credentials"]


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """What one process presents and trusts.

    ``ca``: the cluster CA (PEM) every peer certificate must chain to.
    ``cert`` / ``key``: this process's certificate and key (PEM), None for a
    client that only verifies servers. ``token``: the clients' bearer token
    (a server checks it, a client sends it), None if not given. ``identity``:
    who ``cert`` says we are.
    """

    ca: bytes
    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    identity: Identity | None = None

    @classmethod
    def from_dir(cls, directory: PathLike, role: Role = "client",
                 node_id: int | None = None) -> TlsMaterial:
        """The material ``dpq certs init`` wrote into ``directory`` for ``role``.

        ``"node"`` (with ``node_id``): ``node-<id>.pem`` and its key; ``"gateway"``:
        ``gateway.pem`` and its key; ``"client"``: ``ca.pem`` and ``token`` only.
        Every role reads ``ca.pem`` and ``token``.
        """
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise TlsError(f"TLS folder {directory} does not exist "
                           "(make one with `dpq certs init DIR --nodes N`)")
        if role == "client":
            return cls.from_files(None, None, os.path.join(directory, CA_FILE),
                                  os.path.join(directory, TOKEN_FILE))
        if role == "node" and node_id is None:
            raise TlsError("a node's TLS material needs its node id")
        expected = Identity(role, node_id if role == "node" else None)
        material = cls.from_files(os.path.join(directory, cert_file(expected)),
                                  os.path.join(directory, key_file(expected)),
                                  os.path.join(directory, CA_FILE),
                                  os.path.join(directory, TOKEN_FILE))
        if material.identity != expected:
            raise TlsError(f"{os.path.join(directory, cert_file(expected))} belongs to "
                           f"{material.identity or 'no dpq holder'}, not to {expected}")
        return material

    @classmethod
    def from_files(cls, cert: PathLike | None, key: PathLike | None, ca: PathLike,
                   token_file: PathLike | None = None) -> TlsMaterial:
        """Material from explicit files; ``cert`` and ``key`` come together or not at all,
        ``token_file`` is optional. The certificate's holder is read from it."""
        if (cert is None) != (key is None):
            raise TlsError("a certificate and its key come together: give both or neither "
                           f"(got {'certificate ' + os.fspath(cert) if cert else 'key'} only)")
        ca_pem = _read(ca)
        ca_cert = _certificate(ca_pem, ca)
        cert_pem = key_pem = None
        holder = None
        if cert is not None and key is not None:
            cert_pem, key_pem = _read(cert), _read(key)
            leaf = _certificate(cert_pem, cert)
            _check_key(leaf, key_pem, cert, key)
            _check_signed(leaf, ca_cert, cert, ca)
            _check_current(leaf, cert)
            holder = identities.of_certificate(leaf)
        token = read_token(token_file) if token_file is not None else None
        return cls(ca_pem, cert_pem, key_pem, token, holder)


def _read(path: PathLike) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TlsError(f"{os.fspath(path)}: no such file (the TLS material comes from "
                       "`dpq certs init DIR --nodes N`)") from None
    except OSError as exc:
        raise TlsError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None


def _certificate(pem: bytes, path: PathLike) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise TlsError(f"{os.fspath(path)} is not a PEM certificate") from None


def _check_key(cert: x509.Certificate, key_pem: bytes, cert_path: PathLike,
               key_path: PathLike) -> None:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsError(f"{os.fspath(key_path)} is not an unencrypted PEM private key") from None
    if key.public_key() != cert.public_key():
        raise TlsError(f"{os.fspath(key_path)} is not the key of {os.fspath(cert_path)}")


def _check_signed(cert: x509.Certificate, ca: x509.Certificate, cert_path: PathLike,
                  ca_path: PathLike) -> None:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise TlsError(f"{os.fspath(cert_path)} is not signed by the CA in "
                       f"{os.fspath(ca_path)}") from None


def _check_current(cert: x509.Certificate, path: PathLike) -> None:
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        raise TlsError(f"{os.fspath(path)} expired on {cert.not_valid_after_utc:%Y-%m-%d} "
                       "(make new material with `dpq certs init --force`)")


def read_token(path: PathLike) -> str:
    """The bearer token in ``path`` (surrounding whitespace dropped)."""
    text = _read(path).decode("ascii", "replace").strip()
    if not text:
        raise TlsError(f"{os.fspath(path)} is empty: it should hold the clients' bearer token")
    check_token(text, os.fspath(path))
    return text


def check_token(token: str, where: str = "token") -> None:
    """A token travels in an HTTP/2 header: printable ASCII, no spaces."""
    if not token or not all("!" <= c <= "~" for c in token):
        raise TlsError(f"{where}: a bearer token is printable ASCII without spaces "
                       f"({len(token)} characters given)")


# ----------------------------------------------------------------- credentials

def server_credentials(material: TlsMaterial, require_client_cert: bool) -> grpc.ServerCredentials:
    """TLS for a server port with our certificate; with ``require_client_cert``, a
    caller must present a certificate signed by the cluster CA (mutual TLS), and
    it is then in ``context.auth_context()`` (see :mod:`dpq.security.auth`)."""
    if material.cert is None or material.key is None:
        raise TlsError("a TLS server needs a certificate and its key")
    return grpc.ssl_server_credentials(
        [(material.key, material.cert)],
        root_certificates=material.ca if require_client_cert else None,
        require_client_auth=require_client_cert)


def peer_channel_credentials(material: TlsMaterial) -> grpc.ChannelCredentials:
    """Mutual TLS to a peer port: the server must chain to the cluster CA and match
    the address dialled; we present our own certificate."""
    if material.cert is None or material.key is None:
        raise TlsError("talking to a peer port needs a certificate and its key")
    return grpc.ssl_channel_credentials(root_certificates=material.ca,
                                        private_key=material.key,
                                        certificate_chain=material.cert)


def client_channel_credentials(material_or_ca: TlsMaterial | bytes,
                               token: str | None = None) -> grpc.ChannelCredentials:
    """TLS to a client port, verified under the CA, and ``authorization: Bearer
    <token>`` on every call (``token`` defaults to the material's; no token, no
    header). Works for ``grpc`` and ``grpc.aio`` channels alike."""
    if isinstance(material_or_ca, TlsMaterial):
        ca, token = material_or_ca.ca, token if token is not None else material_or_ca.token
    else:
        ca = material_or_ca
    channel = grpc.ssl_channel_credentials(root_certificates=ca)
    if token is None:
        return channel
    check_token(token)
    return grpc.composite_channel_credentials(channel, grpc.access_token_call_credentials(token))


def client_credentials(tls_dir: PathLike | None = None,
                       root_certificates: bytes | PathLike | None = None,
                       token: str | None = None,
                       environ: Mapping[str, str] = os.environ) -> grpc.ChannelCredentials | None:
    """What a client connects with; None means plaintext.

    ``tls_dir``: a ``dpq certs init`` folder (its ``ca.pem`` and ``token``).
    ``root_certificates``: the CA as PEM bytes, or the path of a PEM file
    (overrides the folder's). ``token``: the bearer token (overrides the
    folder's). With none of the three, ``$DPQ_TLS_DIR`` names the folder (an
    empty value: plaintext). A token without TLS is refused: it would travel
    in the clear.
    """
    if tls_dir is None and root_certificates is None and token is None:
        tls_dir = environ.get(TLS_DIR_ENV) or None
    material = TlsMaterial.from_dir(tls_dir, "client") if tls_dir is not None else None
    if root_certificates is not None:
        ca = (root_certificates if isinstance(root_certificates, bytes)
              else _read(root_certificates))
        if material is not None:
            material = TlsMaterial(ca, token=material.token)
        else:
            material = TlsMaterial(ca)
    if material is None:
        if token is not None:
            raise TlsError("a bearer token needs TLS: give tls_dir or root_certificates too "
                           "(it would travel in the clear)")
        return None
    return client_channel_credentials(material, token)
