"""Make a cluster's TLS material: a CA, a certificate per node, the gateway's, the
clients', and the clients' bearer token (``dpq certs init``).

``DIR/ca.pem`` + ``ca-key.pem`` is the cluster CA; ``node-<id>.pem`` + ``-key.pem``,
``gateway.pem`` + ``-key.pem`` and ``client.pem`` + ``-key.pem`` are signed by it;
``token`` is what clients send as ``authorization: Bearer <token>``. Keys and
token are written 0600, certificates 0644.

Every certificate carries every host as a SAN (DNS or IP), so one certificate
verifies whichever address a node is reached at, and names its holder
(:mod:`dpq.security.identity`). ECDSA P-256 keys, SHA-256 signatures.

The ``new_*`` functions return PEM bytes and touch no file; :func:`write` and
:func:`init` put them on disk.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dpq.security.identity import Identity

DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Validity of the CA and of the certificates it signs, in days.
CA_DAYS = 3650
LEAF_DAYS = 825
#: Largest cluster ``dpq certs init`` makes certificates for.
MAX_NODES = 99

CA_FILE, CA_KEY_FILE, TOKEN_FILE = "ca.pem", "ca-key.pem", "token"
# Backdated a little so a peer whose clock is slightly behind accepts a fresh certificate.
_CLOCK_SKEW = datetime.timedelta(minutes=5)


class CertsError(Exception):
    """One line for the user: what cannot be made or written, and why."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert: bytes
    key: bytes


def cert_file(identity: Identity) -> str:
    """``node-<id>.pem``, ``gateway.pem`` or ``client.pem``."""
    return f"node-{identity.node_id}.pem" if identity.role == "node" else f"{identity.role}.pem"


def key_file(identity: Identity) -> str:
    """``node-<id>-key.pem``, ``gateway-key.pem`` or ``client-key.pem``."""
    return cert_file(identity).removesuffix(".pem") + "-key.pem"


def parse_hosts(text: str | Iterable[str]) -> list[str]:
    """``"127.0.0.1,localhost"`` (or a list) → the host names and IPs, checked, deduplicated."""
    items = text.split(",") if isinstance(text, str) else list(text)
    hosts: list[str] = []
    for host in (h.strip() for h in items):
        if not host:
            continue
        try:
            host = str(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            labels = host.rstrip(".").split(".")
            if not all(0 < len(label) < 64 and label.replace("-", "").replace("*", "").isalnum()
                       and label.isascii() for label in labels):
                raise CertsError(f"--hosts: {host!r} is neither an IP address nor a DNS name")
        if host not in hosts:
            hosts.append(host)
    if not hosts:
        raise CertsError(f"--hosts {text!r} names no host")
    return hosts


def _now(now: datetime.datetime | None) -> datetime.datetime:
    return now or datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_ca(*, now: datetime.datetime | None = None, days: int = CA_DAYS,
           name: str = "dpq cluster CA") -> KeyPair:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    now = _now(now)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def new_leaf(ca: KeyPair, identity: Identity, hosts: Sequence[str], *,
             now: datetime.datetime | None = None, days: int = LEAF_DAYS) -> KeyPair:
    """A certificate for ``identity`` signed by ``ca``, valid for every one of ``hosts``.

    Usable as a TLS server and as a TLS client certificate (nodes and the
    gateway are both).
    """
    now = _now(now)
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertsError("the CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
    for host in parse_hosts(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, identity.common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dpq"),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def new_token() -> str:
    """32 random bytes as URL-safe base64 text (43 characters): the clients' bearer token."""
    return secrets.token_urlsafe(32)


def cluster_files(nodes: int, hosts: Sequence[str], *, now: datetime.datetime | None = None,
                  days: int = LEAF_DAYS) -> dict[str, bytes]:
    """Everything ``dpq certs init`` writes, by file name: CA, ``nodes`` node
    certificates (ids 1..nodes), gateway, client and token."""
    if not 1 <= nodes <= MAX_NODES:
        raise CertsError(f"--nodes {nodes} is out of range: give 1 to {MAX_NODES}")
    if days < 1:
        raise CertsError(f"--days {days} is out of range: give at least 1")
    hosts = parse_hosts(hosts)
    ca = new_ca(now=now, days=max(CA_DAYS, days))
    files = {CA_FILE: ca.cert, CA_KEY_FILE: ca.key}
    holders = [Identity("node", i) for i in range(1, nodes + 1)]
    for identity in (*holders, Identity("gateway"), Identity("client")):
        pair = new_leaf(ca, identity, hosts, now=now, days=days)
        files[cert_file(identity)] = pair.cert
        files[key_file(identity)] = pair.key
    files[TOKEN_FILE] = (new_token() + "\n").encode()
    return files


def is_secret(name: str) -> bool:
    """Whether a file of :func:`cluster_files` must be readable by its owner only."""
    return name.endswith("-key.pem") or name == TOKEN_FILE


def write(directory: str | os.PathLike[str], files: dict[str, bytes], *,
          force: bool = False) -> list[str]:
    """Write ``files`` into ``directory`` (made 0700 if new); their paths.

    Secrets (keys, token) are 0600, the rest 0644, each file replaced whole
    (written beside it, then renamed). Refuses to replace an existing CA
    unless ``force``: every certificate signed by it would stop verifying.
    """
    directory = os.fspath(directory)
    _refuse_existing_ca(directory, force)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        paths = []
        for name, data in files.items():
            path = os.path.join(directory, name)
            _write_file(path, data, 0o600 if is_secret(name) else 0o644)
            paths.append(path)
    except OSError as exc:
        raise CertsError(f"cannot write {exc.filename or directory}: {exc.strerror}") from None
    return paths


def _refuse_existing_ca(directory: str, force: bool) -> None:
    for name in (CA_FILE, CA_KEY_FILE):
        path = os.path.join(directory, name)
        if os.path.exists(path) and not force:
            raise CertsError(f"{path} exists: a new CA would invalidate every certificate "
                             "of that cluster; use --force to replace it")


def _write_file(path: str, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".dpq-")
    try:
        os.fchmod(fd, mode)  # mkstemp made it 0600; certificates are public
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def ensure(directory: str | os.PathLike[str], nodes: int,
           hosts: str | Sequence[str] = DEFAULT_HOSTS) -> list[str]:
    """Material for ``nodes`` nodes in ``directory``, made only where missing (``dpq up
    --tls`` on every start): a new folder gets everything; a folder with a CA keeps
    it, and what is missing (a node added, a deleted file) is signed by it. The
    paths written (none when all was there)."""
    directory = os.fspath(directory)
    ca_path, ca_key_path = (os.path.join(directory, n) for n in (CA_FILE, CA_KEY_FILE))
    if not os.path.exists(ca_path) and not os.path.exists(ca_key_path):
        return write(directory, cluster_files(nodes, parse_hosts(hosts)))
    try:
        with open(ca_path, "rb") as cert, open(ca_key_path, "rb") as key:
            ca = KeyPair(cert.read(), key.read())
    except OSError as exc:
        raise CertsError(f"cannot read {exc.filename}: {exc.strerror} (replace the folder's "
                         "material with `dpq certs init --force`)") from None
    if not 1 <= nodes <= MAX_NODES:
        raise CertsError(f"--nodes {nodes} is out of range: give 1 to {MAX_NODES}")
    missing: dict[str, bytes] = {}
    holders = [Identity("node", i) for i in range(1, nodes + 1)]
    for holder in (*holders, Identity("gateway"), Identity("client")):
        names = (cert_file(holder), key_file(holder))
        if not all(os.path.exists(os.path.join(directory, n)) for n in names):
            pair = new_leaf(ca, holder, parse_hosts(hosts))
            missing.update({names[0]: pair.cert, names[1]: pair.key})
    if not os.path.exists(os.path.join(directory, TOKEN_FILE)):
        missing[TOKEN_FILE] = (new_token() + "\n").encode()
    return write(directory, missing, force=True) if missing else []


def init(directory: str | os.PathLike[str], nodes: int,
         hosts: str | Sequence[str] = DEFAULT_HOSTS, *, force: bool = False,
         days: int = LEAF_DAYS) -> list[str]:
    """``dpq certs init``: make and write a cluster's material; the paths written."""
    directory = os.fspath(directory)
    _refuse_existing_ca(directory, force)  # before spending time on keys
    return write(directory, cluster_files(nodes, parse_hosts(hosts), days=days), force=force)
