"""Exceptions of the core → gRPC status codes, at the edge and nowhere else.

A :class:`dpq.errors.QueueError` carries its own code; the pure cores' exceptions,
which cannot import gRPC, are in :data:`CORE_CODES`. Anything else is a bug:
logged, and answered INTERNAL.
"""

from __future__ import annotations

import functools
import logging

import grpc

from dpq.errors import QueueError
from dpq.paxos.core import NotLeader
from dpq.queue.validate import InvalidArgument

log = logging.getLogger("dpq.services")

#: The status of each exception of the pure cores (and of their subclasses).
CORE_CODES: dict[type[Exception], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotLeader: grpc.StatusCode.UNAVAILABLE,
}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status code and message for ``exc``, or None if it is not an expected failure."""
    if isinstance(exc, QueueError):
        return exc.code, exc.details()
    for kind in type(exc).__mro__:
        code = CORE_CODES.get(kind)
        if code is not None:
            return code, str(exc)
    return None


async def abort_for(exc: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    status = status_of(exc)
    if status is None:
        log.error("%s", exc, exc_info=exc, extra={"route": method})
        status = grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"
    await context.abort(*status)


def mapped(method):
    """Wrap a servicer method so core exceptions become status codes."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await abort_for(exc, context, f"/dpq.v1.Queue/{method.__name__}")

    return wrapper
