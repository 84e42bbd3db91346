"""A small HTTP/1.1 server on the event loop, for /metrics and the web console.

dpq's own traffic is gRPC; HTTP serves only what browsers and Prometheus
speak. Both ask for little (a scrape, a page, JSON, a few POSTs), so this is
asyncio streams, no framework and no thread: one request per connection
(``Connection: close``), every part of it bounded before it is read (request
line and headers 16 KiB, body 64 KiB, 10 s to send the request), anything else
answered ``400``/``413``/``408`` and the connection closed. Each request writes a
line to the request log, as gRPC calls do.

Routes are exact paths, or a prefix ending in ``/`` for static files. A
handler gets a :class:`Request` and returns a :class:`Response`.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dpq import logs
from dpq.services import ports

log = logging.getLogger(__name__)
request_log = logging.getLogger(logs.REQUEST_LOGGER)

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
READ_TIMEOUT_S = 10.0

_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 409: "Conflict", 413: "Content Too Large",
            415: "Unsupported Media Type", 429: "Too Many Requests",
            500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # decoded, without the query
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: bytes
    peer: str  # the client's IP


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, text.encode())


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpServer:
    """Serves ``routes``: ``{(method, path): handler}``; a path ending in ``/`` is a prefix."""

    def __init__(self, routes: dict[tuple[str, str], Handler], *, name: str) -> None:
        self._exact = {key: h for key, h in routes.items() if not key[1].endswith("/")}
        self._prefixes = sorted(((m, p, h) for (m, p), h in routes.items() if p.endswith("/")),
                                key=lambda r: -len(r[1]))
        self._name = name
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, listen: str) -> int:
        """Listen on ``HOST:PORT`` (port 0: any free one); return the port."""
        host, port = ports.split(listen)
        self._server = await asyncio.start_server(self._serve, host or None, port,
                                                  limit=MAX_HEAD_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else str(peer)
        try:
            try:
                request = await asyncio.wait_for(_read(reader, ip), READ_TIMEOUT_S)
            except TimeoutError:
                response = Response.text(408, "the request took too long to arrive\n")
            except BadRequest as exc:
                response = Response.text(exc.status, f"{exc}\n")
            else:
                request_log.info("Received %s request for %s from IP: %s", request.method,
                                 request.path, ip)
                response = await self._answer(request)
            await _write(writer, response)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            writer.close()

    async def _answer(self, request: Request) -> Response:
        handler = self._exact.get((request.method, request.path))
        if handler is None:
            handler = next((h for m, p, h in self._prefixes
                            if m == request.method and request.path.startswith(p)), None)
        if handler is None:
            known = any(p == request.path for _, p in self._exact) or any(
                request.path.startswith(p) for _, p, _ in self._prefixes)
            return Response.text(405 if known else 404,
                                 f"{request.method} {request.path}: not served here\n")
        try:
            return await handler(request)
        except Exception:
            log.exception("%s: %s %s failed", self._name, request.method, request.path)
            return Response.text(500, "internal error (see the server's error log)\n")


async def _read(reader: asyncio.StreamReader, ip: str) -> Request:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise BadRequest(413, f"request line and headers over {MAX_HEAD_BYTES} bytes") from None
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise BadRequest(400, "not an HTTP/1.x request line") from None
    if not version.startswith("HTTP/1."):
        raise BadRequest(400, f"{version[:20]!r}: only HTTP/1.x is served")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(400, f"header line without a colon: {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise BadRequest(400, "Content-Length is not a number") from None
    if length < 0 or length > MAX_BODY_BYTES:
        raise BadRequest(413, f"a body of {length} bytes (at most {MAX_BODY_BYTES})")
    if "chunked" in headers.get("transfer-encoding", ""):
        raise BadRequest(400, "chunked bodies are not accepted: send Content-Length")
    body = await reader.readexactly(length) if length else b""
    parsed = urllib.parse.urlsplit(target)
    query = dict(urllib.parse.parse_qsl(parsed.query, max_num_fields=50))
    return Request(method, urllib.parse.unquote(parsed.path), query, headers, body, ip)


async def _write(writer: asyncio.StreamWriter, response: Response) -> None:
    reason = _REASONS.get(response.status, "")
    head = [f"HTTP/1.1 {response.status} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Connection: close",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff"]
    head += [f"{k}: {v}" for k, v in response.headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
    await writer.drain()
