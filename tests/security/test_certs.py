"""``dpq certs init``: the files it writes, their modes, and what the certificates say."""

from __future__ import annotations

import base64
import ipaddress
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dpq import cli
from dpq.security import certs, identity
from dpq.security.identity import Identity

NAMES = {"ca.pem", "ca-key.pem", "node-1.pem", "node-1-key.pem", "node-2.pem", "node-2-key.pem",
         "node-3.pem", "node-3-key.pem", "gateway.pem", "gateway-key.pem", "client.pem",
         "client-key.pem", "token"}


def _cert(directory, name) -> x509.Certificate:
    with open(os.path.join(directory, name), "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_writes_exactly_the_named_files_with_private_modes(tmp_path):
    directory = tmp_path / "tls"
    written = certs.init(directory, 3)

    assert sorted(os.listdir(directory)) == sorted(NAMES)
    assert sorted(os.path.basename(p) for p in written) == sorted(NAMES)
    assert _mode(directory) == 0o700
    for name in NAMES:
        secret = name.endswith("-key.pem") or name == "token"
        assert _mode(directory / name) == (0o600 if secret else 0o644), name


def test_every_certificate_chains_to_the_ca_and_names_its_holder(tls_dir):
    ca = _cert(tls_dir, "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    holders = {"node-1.pem": Identity("node", 1), "node-2.pem": Identity("node", 2),
               "node-3.pem": Identity("node", 3), "gateway.pem": Identity("gateway"),
               "client.pem": Identity("client")}
    for name, holder in holders.items():
        leaf = _cert(tls_dir, name)
        leaf.verify_directly_issued_by(ca)  # raises if the CA did not sign it
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
        assert leaf.public_key().curve.name == "secp256r1"
        assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usage)
        common_name = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert common_name == holder.common_name
        assert identity.of_certificate(leaf) == holder
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [holder.uri]
        assert set(san.get_values_for_type(x509.IPAddress)) == {
            ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        assert leaf.not_valid_after_utc <= ca.not_valid_after_utc


def test_node_certificate_carries_its_id(tls_dir):
    leaf = _cert(tls_dir, "node-2.pem")
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dpq-node-2"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "dpq://node/2" in san.get_values_for_type(x509.UniformResourceIdentifier)
    with open(os.path.join(tls_dir, "node-2.pem"), "rb") as f:
        assert identity.of_pem(f.read()) == Identity("node", 2)


def test_token_is_32_random_bytes_as_url_safe_text(tls_dir, other_dir):
    tokens = []
    for directory in (tls_dir, other_dir):
        with open(os.path.join(directory, "token")) as f:
            text = f.read().strip()
        assert len(base64.urlsafe_b64decode(text + "=")) == 32
        assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        tokens.append(text)
    assert tokens[0] != tokens[1]


def test_hosts_become_dns_and_ip_sans(tmp_path):
    certs.init(tmp_path, 1, "10.0.0.5,db.example.org,[fd00::1],10.0.0.5")
    san = _cert(tmp_path, "node-1.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5"),
                                                        ipaddress.ip_address("fd00::1")]
    assert san.get_values_for_type(x509.DNSName) == ["db.example.org"]


def test_an_existing_ca_is_replaced_only_with_force(tmp_path):
    certs.init(tmp_path, 1)
    before = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(certs.CertsError, match=r"ca\.pem exists.*--force"):
        certs.init(tmp_path, 1)
    assert (tmp_path / "ca.pem").read_bytes() == before
    certs.init(tmp_path, 1, force=True)
    assert (tmp_path / "ca.pem").read_bytes() != before


@pytest.mark.parametrize(("hosts", "nodes", "message"), [
    ("a b", 1, r"--hosts: 'a b' is neither"),
    (",", 1, r"--hosts ',' names no host"),
    ("127.0.0.1", 0, r"--nodes 0 is out of range"),
])
def test_bad_arguments_are_refused_in_one_line(tmp_path, hosts, nodes, message):
    with pytest.raises(certs.CertsError, match=message):
        certs.init(tmp_path / "x", nodes, hosts)
    assert not (tmp_path / "x").exists()


def test_cli_certs_init(tmp_path, capsys):
    directory = str(tmp_path / "tls")
    assert cli.main(["certs", "init", directory, "--nodes", "2", "--hosts", "127.0.0.1"]) == 0
    assert "node-2-key.pem" in capsys.readouterr().out
    assert sorted(os.listdir(directory)) == sorted(NAMES - {"node-3.pem", "node-3-key.pem"})

    assert cli.main(["certs", "init", directory, "--nodes", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dpq certs: ") and "--force" in err and err.count("\n") == 1
    assert cli.main(["certs", "init", directory, "--nodes", "2", "--force"]) == 0


def test_ensure_makes_only_what_is_missing(tmp_path):
    directory = tmp_path / "dpq-data" / "tls"
    assert len(certs.ensure(directory, 3)) == len(NAMES)
    before = {name: (directory / name).read_bytes() for name in NAMES}
    assert certs.ensure(directory, 3) == []  # a restart changes nothing

    (directory / "client-key.pem").unlink()
    written = certs.ensure(directory, 5)  # two nodes more, and the lost client key
    assert sorted(os.path.basename(p) for p in written) == sorted(
        ["client.pem", "client-key.pem", "node-4.pem", "node-4-key.pem", "node-5.pem",
         "node-5-key.pem"])
    ca = _cert(directory, "ca.pem")
    _cert(directory, "node-5.pem").verify_directly_issued_by(ca)  # the same CA signed them
    for name in NAMES - {"client.pem", "client-key.pem"}:
        assert (directory / name).read_bytes() == before[name], name
    assert _mode(directory / "node-5-key.pem") == 0o600
