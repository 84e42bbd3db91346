"""Mutual TLS on a peer port, with real grpc.aio servers on 127.0.0.1: only certificates
of the cluster CA get in, only node and gateway certificates reach a method, and a
node certificate cannot speak for another node."""

from __future__ import annotations

import os

import grpc
import pytest

from dpq.security import certs
from dpq.security.auth import PeerRoleInterceptor, require_node
from dpq.security.identity import Identity
from dpq.security.tls import (
    TlsMaterial,
    client_channel_credentials,
    peer_channel_credentials,
    server_credentials,
)

SERVICE = "t.Peer"


class PeerService:
    """``Call`` (unary): the request is the node id the caller claims to be;
    ``Upload`` (client stream, node certificates only); ``Watch`` (server stream)."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.auth: dict[str, list[bytes]] = {}

    async def call(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.ran.append("Call")
        self.auth = context.auth_context()
        who = await require_node(context, int(request))
        return str(who).encode()

    async def upload(self, requests, context: grpc.aio.ServicerContext) -> bytes:
        self.ran.append("Upload")
        return b"%d" % len([r async for r in requests])

    async def watch(self, request: bytes, context: grpc.aio.ServicerContext):
        self.ran.append("Watch")
        for i in range(3):
            yield b"%d" % i

    def register(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
            "Call": grpc.unary_unary_rpc_method_handler(self.call),
            "Upload": grpc.stream_unary_rpc_method_handler(self.upload),
            "Watch": grpc.unary_stream_rpc_method_handler(self.watch),
        })])


@pytest.fixture
def peer_port(serve, tls_dir):
    """A peer port of node 1: mutual TLS, nodes and the gateway only, Upload nodes only."""
    service = PeerService()
    material = TlsMaterial.from_dir(tls_dir, "node", 1)
    interceptor = PeerRoleInterceptor(("node", "gateway"),
                                      method_roles={f"/{SERVICE}/Upload": ("node",)})
    address = serve(service.register, server_credentials(material, require_client_cert=True),
                    [interceptor])
    return address, service


def _read(directory: str, name: str) -> bytes:
    with open(os.path.join(directory, name), "rb") as f:
        return f.read()


def _call(address: str, credentials: grpc.ChannelCredentials, claimed: int = 2) -> bytes:
    with grpc.secure_channel(address, credentials) as channel:
        return channel.unary_unary(f"/{SERVICE}/Call")(b"%d" % claimed, timeout=20)


def _rpc_error(fn, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        fn(*args)
    return caught.value


def test_a_node_certificate_of_the_cluster_gets_in(peer_port, tls_dir):
    address, service = peer_port
    node2 = TlsMaterial.from_dir(tls_dir, "node", 2)
    assert _call(address, peer_channel_credentials(node2), claimed=2) == b"node 2"
    # What grpc.aio's auth_context looks like under mutual TLS (documented in dpq.security.auth)
    assert service.auth["transport_security_type"] == [b"ssl"]
    assert service.auth["x509_common_name"] == [b"dpq-node-2"]
    assert service.auth["peer_uri"] == [b"dpq://node/2"]
    assert b"dpq://node/2" in service.auth["x509_subject_alternative_name"]
    assert service.auth["x509_pem_cert"] == [node2.cert]
    # localhost is in the certificate too, so the node is reachable by that name as well
    port = address.rpartition(":")[2]
    assert _call(f"localhost:{port}", peer_channel_credentials(node2)) == b"node 2"


def test_a_certificate_from_another_ca_cannot_call(peer_port, tls_dir, other_dir):
    address, service = peer_port
    ours = TlsMaterial.from_dir(tls_dir, "client")
    theirs = TlsMaterial.from_dir(other_dir, "node", 2)
    # It trusts our CA (so only the server's check of its certificate is in the way).
    credentials = grpc.ssl_channel_credentials(ours.ca, theirs.key, theirs.cert)
    assert _rpc_error(_call, address, credentials).code() == grpc.StatusCode.UNAVAILABLE
    # Nor does a node of ours trust a server of another CA.
    assert _rpc_error(_call, address, peer_channel_credentials(
        TlsMaterial(theirs.ca, TlsMaterial.from_dir(tls_dir, "node", 2).cert,
                    TlsMaterial.from_dir(tls_dir, "node", 2).key))).code() == \
        grpc.StatusCode.UNAVAILABLE
    assert service.ran == []


def test_no_client_certificate_cannot_call(peer_port, tls_dir):
    address, service = peer_port
    only_tls = client_channel_credentials(TlsMaterial.from_dir(tls_dir, "client"))
    assert _rpc_error(_call, address, only_tls).code() == grpc.StatusCode.UNAVAILABLE
    assert service.ran == []


def test_a_node_certificate_claiming_another_node_id_is_refused(peer_port, tls_dir):
    address, _ = peer_port
    node2 = peer_channel_credentials(TlsMaterial.from_dir(tls_dir, "node", 2))
    error = _rpc_error(_call, address, node2, 3)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "message from node 3 sent with the certificate of node 2"


def test_client_and_gateway_certificates_stay_out_of_node_methods(peer_port, tls_dir):
    address, service = peer_port
    client = TlsMaterial.from_dir(tls_dir, "client")
    client_cert = TlsMaterial(client.ca, _read(tls_dir, "client.pem"),
                              _read(tls_dir, "client-key.pem"))
    error = _rpc_error(_call, address, peer_channel_credentials(client_cert))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not client" in error.details()
    assert service.ran == []  # refused before the method ran

    gateway = peer_channel_credentials(TlsMaterial.from_dir(tls_dir, "gateway"))
    with grpc.secure_channel(address, gateway) as channel:
        # Watch is open to the gateway ...
        assert list(channel.unary_stream(f"/{SERVICE}/Watch")(b"", timeout=20)) == \
            [b"0", b"1", b"2"]
        # ... Upload is for nodes only,
        upload = channel.stream_unary(f"/{SERVICE}/Upload")
        error = _rpc_error(upload, iter([b"a", b"b"]), 20)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error.details().startswith(
            f"/{SERVICE}/Upload is for node certificates, not gateway")
        # ... and a gateway cannot claim to be a node.
        error = _rpc_error(channel.unary_unary(f"/{SERVICE}/Call"), b"1", 20)
        assert error.details() == "message from node 1 sent with the gateway certificate"
    assert service.ran == ["Watch", "Call"]

    node3 = peer_channel_credentials(TlsMaterial.from_dir(tls_dir, "node", 3))
    with grpc.secure_channel(address, node3) as channel:
        assert channel.stream_unary(f"/{SERVICE}/Upload")(iter([b"a", b"b"]), timeout=20) == b"2"


def test_the_server_name_is_verified(serve, tmp_path, tls_dir):
    """A certificate that does not list the address dialled is refused by the client."""
    ours = TlsMaterial.from_dir(tls_dir, "node", 1)
    ca = certs.KeyPair(ours.ca, _read(tls_dir, "ca-key.pem"))
    elsewhere = certs.new_leaf(ca, Identity("node", 1), ["10.9.9.9", "node1.example"])
    service = PeerService()
    address = serve(service.register, server_credentials(
        TlsMaterial(ours.ca, elsewhere.cert, elsewhere.key, identity=Identity("node", 1)),
        require_client_cert=True))
    node2 = peer_channel_credentials(TlsMaterial.from_dir(tls_dir, "node", 2))
    assert _rpc_error(_call, address, node2).code() == grpc.StatusCode.UNAVAILABLE
    assert service.ran == []


def test_without_mutual_tls_no_node_is_proven(serve, tls_dir):
    """Plaintext (and TLS without a client certificate) carries no identity: require_node
    refuses, so it is only called where mutual TLS is on."""
    service = PeerService()
    plain = serve(service.register)
    with grpc.insecure_channel(plain) as channel:
        error = _rpc_error(channel.unary_unary(f"/{SERVICE}/Call"), b"1", 20)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "message from node 1 without a verified dpq certificate"
    assert service.auth == {"transport_security_type": [b"insecure"],
                            "security_level": [b"TSI_SECURITY_NONE"]}

    server_only = serve(service.register, server_credentials(
        TlsMaterial.from_dir(tls_dir, "node", 1), require_client_cert=False))
    node2 = peer_channel_credentials(TlsMaterial.from_dir(tls_dir, "node", 2))
    error = _rpc_error(_call, server_only, node2, 2)  # presents it, but it is not asked for
    assert error.details() == "message from node 2 without a verified dpq certificate"
    assert service.auth["transport_security_type"] == [b"ssl"]
    assert "x509_common_name" not in service.auth and "peer_uri" not in service.auth
