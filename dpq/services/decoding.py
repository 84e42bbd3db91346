"""Request bodies that are too big or do not parse: a clear status, on every RPC of every server.

gRPC parses a request with the handler's ``request_deserializer`` before any
servicer code runs; a body that fails to parse then surfaces as ``UNKNOWN``
with a Python class name in the details. :class:`DecodingInterceptor` wraps
each handler's deserializer so the failure becomes a :class:`Refused` value
instead, and wraps the handler so that value is answered with a status that
names the method: ``INVALID_ARGUMENT`` for a body that is not the request
message, ``RESOURCE_EXHAUSTED`` for one over its service's size limit (a server
that serves services with different limits, e.g. the public Queue beside
Replication, cannot rely on gRPC's one per-server cap alone). Streams are
checked message by message.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc


class Refused:
    """What the deserializer gives instead of a request it refuses."""

    __slots__ = ("code", "message")

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message


def _type_name(deserializer) -> str:
    owner = getattr(deserializer, "__self__", None)  # ``SomeRequest.FromString``
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", "") or "request message"


def checked_deserializer(method: str, deserializer, limit: int, limit_name: str):
    """``deserializer`` that returns :class:`Refused` instead of raising or over ``limit``."""
    type_name = _type_name(deserializer)

    def deserialize(raw: bytes):
        if limit and len(raw) > limit:
            return Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"{method}: the request is {len(raw)} bytes, over the limit of "
                           f"{limit} bytes ({limit_name})")
        try:
            return deserializer(raw)
        except Exception:  # noqa: BLE001 - any parse failure is the caller's bad body
            return Refused(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{method}: the request body is not a valid {type_name}")

    return deserialize


async def _refuse(request, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, Refused):
        await context.abort(request.code, request.message)


async def _checked(requests: AsyncIterator, context) -> AsyncIterator:
    async for request in requests:
        await _refuse(request, context)
        yield request


async def _responses(result) -> AsyncIterator:
    # A streaming handler is an async generator, or a coroutine that writes
    # with ``context.write``; pass either through.
    if inspect.isasyncgen(result) or hasattr(result, "__aiter__"):
        async for response in result:
            yield response
    elif inspect.isawaitable(result):
        await result


class DecodingInterceptor(grpc.aio.ServerInterceptor):
    """``limit_for(method)`` gives the size limit of a method's requests and the
    setting that sets it, e.g. ``(17825792, "--max-request-bytes")``; 0: none."""

    def __init__(self, limit_for: Callable[[str], tuple[int, str]]) -> None:
        self._limit_for = limit_for

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = details.method
        handler = handler._replace(request_deserializer=checked_deserializer(
            method, handler.request_deserializer, *self._limit_for(method)))
        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request, context):
                await _refuse(request, context)
                return await inner_uu(request, context)

            return handler._replace(unary_unary=unary_unary)
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(request, context):
                await _refuse(request, context)
                async for response in _responses(inner_us(request, context)):
                    yield response

            return handler._replace(unary_stream=unary_stream)
        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def stream_unary(requests, context):
                return await inner_su(_checked(requests, context), context)

            return handler._replace(stream_unary=stream_unary)
        inner_ss = handler.stream_stream

        async def stream_stream(requests, context):
            async for response in _responses(inner_ss(_checked(requests, context), context)):
                yield response

        return handler._replace(stream_stream=stream_stream)
