"""Server-side checks of who calls: the clients' bearer token, and the identity in a
peer's verified certificate.

- :class:`TokenInterceptor` (client port): a call without ``authorization:
  Bearer <token>`` is answered ``UNAUTHENTICATED`` and nothing else; no method
  runs. It needs no TLS context, only the call's metadata.
- :class:`PeerRoleInterceptor` (peer port, under mutual TLS): only certificates of
  the allowed roles may call (the cluster CA also signs ``client.pem``, which
  must not reach the replication plane); others get ``PERMISSION_DENIED``.
- :func:`peer_identity` / :func:`node_mismatch` / :func:`require_node`: inside a
  handler, which node the caller's certificate names, and refusing a message
  that claims to come from another node.

What grpc.aio offers (grpcio 1.85, checked by tests/security): under mutual TLS
``context.auth_context()`` is a dict of byte lists, e.g. ``x509_common_name:
[b'dpq-node-2']``, ``x509_subject_alternative_name: [b'dpq://node/2',
b'127.0.0.1', …]``, ``peer_uri: [b'dpq://node/2']``, ``x509_pem_cert: [PEM]``,
``transport_security_type: [b'ssl']``; the certificate entries exist only when a
client certificate was asked for, presented and verified. Plaintext gives
``{transport_security_type: [b'insecure'], security_level: [b'TSI_SECURITY_NONE']}``.
``HandlerCallDetails`` (what
an interceptor sees) carries the method and metadata but no auth context, so
certificate checks wrap the handler instead.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping

import grpc

from dpq import clock as clocks
from dpq import logs
from dpq.security import identity as identities
from dpq.security.identity import Identity, Role

log = logging.getLogger("dpq.security")

MISSING_TOKEN = "missing bearer token"
WRONG_TOKEN = "wrong bearer token"
#: Refusals are logged at most this often per reason (a flood must not flood the log).
LOG_EVERY_S = 60.0

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class _Throttled:
    """One warning line per reason per :data:`LOG_EVERY_S`, counting the rest."""

    def __init__(self, clock: clocks.Clock = clocks.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def warn(self, reason: str, peer: str) -> None:
        self._count[reason] = self._count.get(reason, 0) + 1
        now = self._clock()
        if now - self._last.get(reason, -LOG_EVERY_S) < LOG_EVERY_S:
            return
        self._last[reason] = now
        log.warning("refused %d call(s): %s (last from IP %s)", self._count.pop(reason), reason,
                    logs.client_ip(peer))


def _refusal(code: grpc.StatusCode, message: str,
             throttle: _Throttled) -> grpc.RpcMethodHandler:
    """A handler that answers ``code`` at once, reads no request and decodes nothing.

    stream-stream serves every kind of call (the server neither waits for a
    request nor sends a response before the status), and as an async generator
    it fits interceptors that wrap handlers (the request log).
    """

    async def refuse(request_iterator, context: grpc.aio.ServicerContext):
        throttle.warn(message, context.peer())
        await context.abort(code, message)
        yield  # pragma: no cover - abort raises; this makes it an async generator

    return grpc.stream_stream_rpc_method_handler(refuse)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Answers ``UNAUTHENTICATED`` unless ``authorization`` is exactly ``Bearer <token>``.

    ``open_methods``: full method paths served without a token (none by
    default). Put it after the request-log interceptor so refused calls are
    logged too.
    """

    def __init__(self, token: str, *, open_methods: Collection[str] = ()) -> None:
        if not token:
            raise ValueError("TokenInterceptor needs a non-empty token")
        self._expected = f"Bearer {token}".encode()
        self._open = frozenset(open_methods)
        throttle = _Throttled()
        self._missing = _refusal(grpc.StatusCode.UNAUTHENTICATED, MISSING_TOKEN, throttle)
        self._wrong = _refusal(grpc.StatusCode.UNAUTHENTICATED, WRONG_TOKEN, throttle)

    async def intercept_service(self, continuation: Continuation,
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method in self._open:
            return await continuation(details)
        values = [value for key, value in (details.invocation_metadata or ())
                  if key == "authorization"]
        if not values:
            return self._missing
        given = values[0].encode() if isinstance(values[0], str) else values[0]
        # Constant time, and two headers are as wrong as a wrong one.
        if not hmac.compare_digest(given, self._expected) or len(values) != 1:
            return self._wrong
        return await continuation(details)


# ------------------------------------------------------------------- certificates

def peer_identity(context: grpc.aio.ServicerContext) -> Identity | None:
    """Who the caller's verified certificate names; None without one (plaintext, or
    TLS without a client certificate) or if it names no dpq holder."""
    auth = context.auth_context()
    return identity_of_auth(auth)


def identity_of_auth(auth: Mapping[str, list[bytes]]) -> Identity | None:
    """:func:`peer_identity` of an ``auth_context()`` dict."""
    uris = auth.get("peer_uri") or []
    found = {i for i in (identities.from_uri(u.decode("ascii", "replace")) for u in uris)
             if i is not None}
    if len(found) == 1:
        return found.pop()
    pem = (auth.get("x509_pem_cert") or [None])[0]
    return identities.of_pem(pem) if pem else None


def node_mismatch(identity: Identity | None, claimed_src: int) -> str | None:
    """Why a message claiming to come from node ``claimed_src`` must be refused from
    this caller, or None if its certificate is that node's."""
    if identity is None:
        return f"message from node {claimed_src} without a verified dpq certificate"
    if identity.role != "node":
        return f"message from node {claimed_src} sent with the {identity} certificate"
    if identity.node_id != claimed_src:
        return f"message from node {claimed_src} sent with the certificate of {identity}"
    return None


async def require_node(context: grpc.aio.ServicerContext, claimed_src: int) -> Identity:
    """The caller's identity, if its certificate is node ``claimed_src``'s; otherwise the
    call ends with ``PERMISSION_DENIED`` naming both (``context.abort`` raises)."""
    found = peer_identity(context)
    reason = node_mismatch(found, claimed_src)
    if reason is not None:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
    assert found is not None
    return found


class PeerRoleInterceptor(grpc.aio.ServerInterceptor):
    """Only callers whose certificate has one of ``roles`` reach a method; the rest get
    ``PERMISSION_DENIED`` before it runs. ``method_roles`` narrows some methods
    (e.g. ``{"/dpq.v1.Replication/Stream": {"node"}}``). For a mutual-TLS port."""

    def __init__(self, roles: Collection[Role] = ("node", "gateway"),
                 method_roles: Mapping[str, Collection[Role]] | None = None) -> None:
        self._roles = frozenset(roles)
        self._by_method = {m: frozenset(r) for m, r in (method_roles or {}).items()}
        self._throttle = _Throttled()

    async def intercept_service(self, continuation: Continuation,
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        allowed = self._by_method.get(details.method, self._roles)
        throttle = self._throttle

        async def check(context: grpc.aio.ServicerContext) -> None:
            found = peer_identity(context)
            if found is None or found.role not in allowed:
                reason = (f"{details.method} is for {' and '.join(sorted(allowed))} "
                          f"certificates, not {found or 'a caller without one'}")
                throttle.warn(reason, context.peer())
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)

        return guarded(handler, check)


def guarded(handler: grpc.RpcMethodHandler,
            check: Callable[[grpc.aio.ServicerContext], Awaitable[None]]
            ) -> grpc.RpcMethodHandler:
    """``handler`` with ``await check(context)`` run before its method (which
    ``check`` prevents by aborting). Streaming methods must be async generators
    or coroutines; both are handled."""
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(request, context):
            await check(context)
            return await inner_uu(request, context)

        return handler._replace(unary_unary=unary_unary)
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(requests, context):
            await check(context)
            return await inner_su(requests, context)

        return handler._replace(stream_unary=stream_unary)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(request, context):
            await check(context)
            async for response in _responses(inner_us(request, context)):
                yield response

        return handler._replace(unary_stream=unary_stream)
    inner_ss = handler.stream_stream

    async def stream_stream(requests, context):
        await check(context)
        async for response in _responses(inner_ss(requests, context)):
            yield response

    return handler._replace(stream_stream=stream_stream)


async def _responses(result):
    """The responses of a streaming method: an async generator, or a coroutine that
    wrote them with ``context.write`` (then there is nothing to yield)."""
    if hasattr(result, "__aiter__"):
        async for response in result:
            yield response
    else:
        await result
