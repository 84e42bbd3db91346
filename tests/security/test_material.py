"""Loading TLS material: what each role reads, and one-line errors naming the file."""

from __future__ import annotations

import argparse
import datetime
import os
import shutil

import pytest

from dpq.security import certs, flags
from dpq.security.identity import Identity
from dpq.security.tls import TlsError, TlsMaterial, client_credentials


def _read(directory, name) -> bytes:
    with open(os.path.join(directory, name), "rb") as f:
        return f.read()


def _copy(src, dst) -> str:
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        shutil.copy(os.path.join(src, name), os.path.join(dst, name))
    return str(dst)


def test_each_role_reads_its_own_files(tls_dir):
    node = TlsMaterial.from_dir(tls_dir, "node", 2)
    assert node.identity == Identity("node", 2)
    assert node.cert == _read(tls_dir, "node-2.pem")
    assert node.key == _read(tls_dir, "node-2-key.pem")
    assert node.ca == _read(tls_dir, "ca.pem")
    assert node.token == _read(tls_dir, "token").decode().strip()

    gateway = TlsMaterial.from_dir(tls_dir, "gateway")
    assert gateway.identity == Identity("gateway") and gateway.cert == _read(tls_dir,
                                                                            "gateway.pem")
    client = TlsMaterial.from_dir(tls_dir, "client")
    assert (client.cert, client.key, client.identity) == (None, None, None)
    assert client.token == node.token and client.ca == node.ca
    assert node.token not in repr(node) and "PRIVATE" not in repr(node)


def test_missing_folder_and_missing_file_are_named(tmp_path, tls_dir):
    with pytest.raises(TlsError, match=r"TLS folder .*nowhere does not exist.*dpq certs init"):
        TlsMaterial.from_dir(tmp_path / "nowhere", "client")
    partial = _copy(tls_dir, tmp_path / "partial")
    os.remove(os.path.join(partial, "node-3-key.pem"))
    with pytest.raises(TlsError, match=r"node-3-key\.pem: no such file"):
        TlsMaterial.from_dir(partial, "node", 3)
    os.remove(os.path.join(partial, "token"))
    with pytest.raises(TlsError, match=r"/token: no such file"):
        TlsMaterial.from_dir(partial, "client")


def test_unreadable_or_malformed_files_are_named(tmp_path, tls_dir):
    broken = _copy(tls_dir, tmp_path / "broken")
    with open(os.path.join(broken, "ca.pem"), "w") as f:
        f.write("not a certificate\n")
    with pytest.raises(TlsError, match=r"ca\.pem is not a PEM certificate"):
        TlsMaterial.from_dir(broken, "client")
    os.chmod(os.path.join(broken, "ca.pem"), 0o000)
    if os.access(os.path.join(broken, "ca.pem"), os.R_OK):  # root reads anything
        os.remove(os.path.join(broken, "ca.pem"))
        os.mkdir(os.path.join(broken, "ca.pem"))  # a folder cannot be read as a file
    with pytest.raises(TlsError, match=r"cannot read .*ca\.pem: "):
        TlsMaterial.from_dir(broken, "client")


def test_a_key_that_does_not_fit_its_certificate_is_refused(tmp_path, tls_dir):
    swapped = _copy(tls_dir, tmp_path / "swapped")
    shutil.copy(os.path.join(tls_dir, "node-2-key.pem"), os.path.join(swapped, "node-1-key.pem"))
    with pytest.raises(TlsError, match=r"node-1-key\.pem is not the key of .*node-1\.pem"):
        TlsMaterial.from_dir(swapped, "node", 1)


def test_a_certificate_of_another_ca_is_refused(tmp_path, tls_dir, other_dir):
    mixed = _copy(tls_dir, tmp_path / "mixed")
    for name in ("node-1.pem", "node-1-key.pem"):
        shutil.copy(os.path.join(other_dir, name), os.path.join(mixed, name))
    with pytest.raises(TlsError, match=r"node-1\.pem is not signed by the CA in .*ca\.pem"):
        TlsMaterial.from_dir(mixed, "node", 1)


def test_a_certificate_of_another_node_is_refused(tmp_path, tls_dir):
    renamed = _copy(tls_dir, tmp_path / "renamed")
    for suffix in (".pem", "-key.pem"):
        shutil.copy(os.path.join(tls_dir, f"node-2{suffix}"),
                    os.path.join(renamed, f"node-1{suffix}"))
    with pytest.raises(TlsError, match=r"node-1\.pem belongs to node 2, not to node 1"):
        TlsMaterial.from_dir(renamed, "node", 1)
    with pytest.raises(TlsError, match=r"needs its node id"):
        TlsMaterial.from_dir(tls_dir, "node")


def test_an_expired_certificate_is_refused(tmp_path):
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    ca = certs.new_ca(now=old)
    leaf = certs.new_leaf(ca, Identity("node", 1), ["127.0.0.1"], now=old, days=1)
    files = {"ca.pem": ca.cert, "node-1.pem": leaf.cert, "node-1-key.pem": leaf.key,
             "token": b"t0ken\n"}
    certs.write(tmp_path, files)
    with pytest.raises(TlsError, match=r"node-1\.pem expired on "):
        TlsMaterial.from_dir(tmp_path, "node", 1)


@pytest.mark.parametrize(("content", "message"), [
    (b"\n", r"token is empty"),
    (b"two words\n", r"printable ASCII without spaces"),
])
def test_a_bad_token_file_is_refused(tmp_path, tls_dir, content, message):
    bad = _copy(tls_dir, tmp_path / "bad")
    with open(os.path.join(bad, "token"), "wb") as f:
        f.write(content)
    with pytest.raises(TlsError, match=message):
        TlsMaterial.from_dir(bad, "client")


# ------------------------------------------------------------------------ flags

def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    flags.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_tls_dir_or_the_four_files(tls_dir):
    assert flags.from_arguments(_parse(), "node", 1) is None
    by_dir = flags.from_arguments(_parse("--tls-dir", tls_dir), "node", 3)
    assert by_dir is not None and by_dir.identity == Identity("node", 3)
    files = [os.path.join(tls_dir, n) for n in ("gateway.pem", "gateway-key.pem", "ca.pem",
                                                "token")]
    by_files = flags.from_arguments(
        _parse("--tls-cert", files[0], "--tls-key", files[1], "--tls-ca", files[2],
               "--token-file", files[3]), "gateway")
    assert by_files == TlsMaterial.from_dir(tls_dir, "gateway")
    # a file given on its own overrides the folder's
    override = flags.from_arguments(
        _parse("--tls-dir", tls_dir, "--tls-cert", os.path.join(tls_dir, "node-2.pem"),
               "--tls-key", os.path.join(tls_dir, "node-2-key.pem")), "node", 2)
    assert override is not None and override.identity == Identity("node", 2)


def test_flags_name_what_is_missing_or_wrong(tls_dir):
    with pytest.raises(TlsError, match=r"TLS needs --tls-key, --token-file too"):
        flags.from_arguments(_parse("--tls-cert", "a.pem", "--tls-ca", "ca.pem"), "node", 1)
    with pytest.raises(TlsError, match=r"node-2\.pem is the certificate of node 2, not of node 1"):
        flags.from_arguments(
            _parse("--tls-dir", tls_dir, "--tls-cert", os.path.join(tls_dir, "node-2.pem"),
                   "--tls-key", os.path.join(tls_dir, "node-2-key.pem")), "node", 1)
    with pytest.raises(TlsError, match=r"client\.pem is the certificate of client, not of gateway"):
        flags.from_arguments(
            _parse("--tls-dir", tls_dir, "--tls-cert", os.path.join(tls_dir, "client.pem"),
                   "--tls-key", os.path.join(tls_dir, "client-key.pem")), "gateway")


# ------------------------------------------------------------------------ client

def test_client_credentials_sources(tls_dir):
    assert client_credentials(environ={}) is None
    assert client_credentials(environ={"DPQ_TLS_DIR": ""}) is None
    assert client_credentials(environ={"DPQ_TLS_DIR": tls_dir}) is not None
    assert client_credentials(root_certificates=os.path.join(tls_dir, "ca.pem"),
                              environ={}) is not None
    with pytest.raises(TlsError, match=r"a bearer token needs TLS"):
        client_credentials(token="abc", environ={"DPQ_TLS_DIR": tls_dir})
    with pytest.raises(TlsError, match=r"printable ASCII"):
        client_credentials(root_certificates=_read(tls_dir, "ca.pem"), token="a b", environ={})
