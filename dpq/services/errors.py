"""Exceptions of the core → gRPC status codes, at the edge and nowhere else."""

from __future__ import annotations

import functools
import logging

import grpc

from dpq.errors import Forwarded, ResourceExhausted, Unavailable
from dpq.paxos.core import NotLeader
from dpq.queue.validate import InvalidArgument

log = logging.getLogger("dpq.services")


async def abort_for(exc: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(exc, InvalidArgument):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, ResourceExhausted):
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    if isinstance(exc, Unavailable):
        where = f"; the leader is at {exc.leader}" if exc.leader else "; no leader is known yet"
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}{where}: retry")
    if isinstance(exc, Forwarded):
        await context.abort(exc.code, str(exc))
    if isinstance(exc, NotLeader):
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}")
    log.error("%s", exc, exc_info=exc, extra={"route": method})
    await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")


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
