"""Every dpq process's two logs, in exactly the forms the product promises (DESIGN.md, "Logs")::

    2024-12-27 12:34:56.789 [ERROR] <error_route>: <error_message>
    2024-12-27 12:45:00.123 [INFO] index: Received <request_method> request for <request_uri> from IP: <client_IP>

Times are local, to the millisecond. The request log is written by
:class:`RequestLogInterceptor` (method ``POST``, uri = the full gRPC method
path, the peer's IP); everything else that goes wrong goes to the error log,
whose route is the logger's name (``dpq.node``, ``dpq.paxos.driver`` …) or an
explicit ``extra={"route": ...}``. Both go to stderr and, when a directory is
given, to ``requests.log`` and ``errors.log`` in it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable

import grpc

REQUEST_LOGGER = "dpq.requests"
ERROR_LOGGER = "dpq"


class LineFormatter(logging.Formatter):
    """``<local time, ms> [<LEVEL>] <route>: <message>``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d [%(levelname)s] %(route)s: %(message)s",
                         datefmt="%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "route"):
            record.route = record.name
        text = super().format(record)
        # One event, one line: tracebacks are folded so the form holds.
        return text.replace("\n", " | ")


def setup(directory: str | None = None, *, level: str = "WARNING",
          request_level: str = "INFO", stderr: bool = True) -> None:
    """Configure both logs for this process (idempotent)."""
    formatter = LineFormatter()
    for name, lvl, filename in ((ERROR_LOGGER, level, "errors.log"),
                                (REQUEST_LOGGER, request_level, "requests.log")):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(lvl.upper())
        logger.propagate = False
        handlers: list[logging.Handler] = []
        if stderr:
            handlers.append(logging.StreamHandler(sys.stderr))
        if directory:
            os.makedirs(directory, exist_ok=True)
            handlers.append(logging.FileHandler(os.path.join(directory, filename)))
        for handler in handlers:
            handler.setFormatter(formatter)
            logger.addHandler(handler)


def client_ip(peer: str) -> str:
    """The IP in a gRPC peer string: ``ipv4:127.0.0.1:5``, ``ipv6:[::1]:5``, ``unix:…``."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return rest or peer


class RequestLogInterceptor(grpc.aio.ServerInterceptor):
    """Writes one request-log line per RPC, with the caller's IP.

    The peer address is only known to the handler's context, so the handler is
    wrapped rather than the call details read.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(REQUEST_LOGGER)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not self._log.isEnabledFor(logging.INFO):
            return handler
        method, log = details.method, self._log

        def note(context: grpc.aio.ServicerContext) -> None:
            log.info("Received POST request for %s from IP: %s", method,
                     client_ip(context.peer()), extra={"route": "index"})

        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request, context):
                note(context)
                return await inner_uu(request, context)

            return handler._replace(unary_unary=unary_unary)
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(request, context):
                note(context)
                async for response in inner_us(request, context):
                    yield response

            return handler._replace(unary_stream=unary_stream)
        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def stream_unary(requests, context):
                note(context)
                return await inner_su(requests, context)

            return handler._replace(stream_unary=stream_unary)
        inner_ss = handler.stream_stream

        async def stream_stream(requests, context):
            note(context)
            async for response in inner_ss(requests, context):
                yield response

        return handler._replace(stream_stream=stream_stream)
