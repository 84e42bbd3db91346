"""The bearer token on a TLS client port, with real grpc.aio servers on 127.0.0.1: a call
without the right ``authorization: Bearer <token>`` gets ``UNAUTHENTICATED`` and
nothing else, whatever its kind, and no method runs."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from dpq import logs
from dpq.security.auth import MISSING_TOKEN, WRONG_TOKEN, TokenInterceptor
from dpq.security.tls import TlsMaterial, client_channel_credentials, server_credentials

SERVICE = "t.Echo"


class Echo:
    """One method of each kind; ``ran`` lists the ones that ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    async def unary(self, request, context):
        self.ran.append("unary")
        return request

    async def server_stream(self, request, context):
        self.ran.append("server_stream")
        yield request
        yield request

    async def client_stream(self, requests, context):
        self.ran.append("client_stream")
        return b"".join([r async for r in requests])

    async def bidi(self, requests, context):
        self.ran.append("bidi")
        async for request in requests:
            yield request

    def register(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
        })])
        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)


@pytest.fixture
def client_port(serve, tls_dir):
    """A client port of node 1: TLS (no client certificate) and the token; the request
    log in front, as in a node."""
    echo = Echo()
    material = TlsMaterial.from_dir(tls_dir, "node", 1)
    address = serve(echo.register, server_credentials(material, require_client_cert=False),
                    [logs.RequestLogInterceptor(), TokenInterceptor(material.token)])
    return address, echo, material


def _calls(channel: grpc.Channel) -> dict[str, object]:
    """Each kind of call, made and read to the end."""
    return {
        "unary": lambda: channel.unary_unary(f"/{SERVICE}/Unary")(b"x", timeout=20),
        "server_stream": lambda: list(
            channel.unary_stream(f"/{SERVICE}/ServerStream")(b"x", timeout=20)),
        "client_stream": lambda: channel.stream_unary(f"/{SERVICE}/ClientStream")(
            iter([b"a", b"b"]), timeout=20),
        "bidi": lambda: list(channel.stream_stream(f"/{SERVICE}/Bidi")(
            iter([b"a", b"b"]), timeout=20)),
        "health": lambda: health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=20),
        "unknown": lambda: channel.unary_unary("/t.Nothing/Here")(b"x", timeout=20),
    }


@pytest.mark.parametrize(("token", "message"), [(None, MISSING_TOKEN),
                                                 ("wrong-token", WRONG_TOKEN)])
def test_without_the_right_token_every_call_is_unauthenticated(client_port, token, message):
    address, echo, material = client_port
    credentials = client_channel_credentials(material.ca, token)
    with grpc.secure_channel(address, credentials) as channel:
        for kind, call in _calls(channel).items():
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert (kind, caught.value.code()) == (kind, grpc.StatusCode.UNAUTHENTICATED)
            assert caught.value.details() == message
    assert echo.ran == []


def test_a_token_sent_twice_or_without_bearer_is_wrong(client_port):
    address, echo, material = client_port
    tls = grpc.ssl_channel_credentials(material.ca)
    with grpc.secure_channel(address, tls) as channel:
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        for metadata in ([("authorization", material.token)],
                         [("authorization", f"bearer {material.token}")],
                         [("authorization", f"Bearer {material.token} ")],
                         [("authorization", f"Bearer {material.token}"),
                          ("authorization", f"Bearer {material.token}")]):
            with pytest.raises(grpc.RpcError) as caught:
                unary(b"x", timeout=20, metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert caught.value.details() == WRONG_TOKEN
        # the same header by hand, once and exact, is accepted
        assert unary(b"x", timeout=20,
                     metadata=[("authorization", f"Bearer {material.token}")]) == b"x"
    assert echo.ran == ["unary"]


def test_with_the_right_token_every_call_is_answered(client_port):
    address, echo, material = client_port
    with grpc.secure_channel(address, client_channel_credentials(material)) as channel:
        calls = _calls(channel)
        assert calls["unary"]() == b"x"
        assert calls["server_stream"]() == [b"x", b"x"]
        assert calls["client_stream"]() == b"ab"
        assert calls["bidi"]() == [b"a", b"b"]
        assert calls["health"]().status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            calls["unknown"]()
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert echo.ran == ["unary", "server_stream", "client_stream", "bidi"]


def test_open_methods_need_no_token(serve, tls_dir):
    echo = Echo()
    material = TlsMaterial.from_dir(tls_dir, "node", 1)
    check = "/grpc.health.v1.Health/Check"
    address = serve(echo.register, server_credentials(material, require_client_cert=False),
                    [TokenInterceptor(material.token, open_methods=[check])])
    with grpc.secure_channel(address, client_channel_credentials(material.ca)) as channel:
        calls = _calls(channel)
        assert calls["health"]().status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            calls["unary"]()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_plaintext_to_a_tls_port_does_not_connect(client_port):
    address, echo, _ = client_port
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            _calls(channel)["unary"]()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert echo.ran == []
