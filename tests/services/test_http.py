"""The small HTTP server behind /metrics and the console: routes, bounds, bad requests."""

from __future__ import annotations

import asyncio

from dpq.services.http import MAX_BODY_BYTES, HttpServer, Request, Response


async def _exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


def _run(test) -> None:
    async def main():
        seen: list[Request] = []

        async def hello(request: Request) -> Response:
            seen.append(request)
            return Response(200, b"hi " + request.body, "text/plain")

        async def static(request: Request) -> Response:
            return Response.text(200, request.path)

        async def broken(request: Request) -> Response:
            raise RuntimeError("boom")

        server = HttpServer({("GET", "/hello"): hello, ("POST", "/hello"): hello,
                             ("GET", "/static/"): static, ("GET", "/broken"): broken},
                            name="test")
        port = await server.start("127.0.0.1:0")
        try:
            await test(port, seen)
        finally:
            await server.stop()
    asyncio.run(main())


def test_routes_answer_and_everything_else_is_refused():
    async def test(port, seen):
        ok = await _exchange(port, b"GET /hello?x=1&y=%20z HTTP/1.1\r\nHost: a\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b"\r\n\r\nhi ")
        assert seen[0].query == {"x": "1", "y": " z"} and seen[0].headers["host"] == "a"
        posted = await _exchange(port, b"POST /hello HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        assert posted.endswith(b"hi abc")
        assert (await _exchange(port, b"GET /static/app.js HTTP/1.1\r\n\r\n")).endswith(
            b"/static/app.js")
        assert b" 404 " in await _exchange(port, b"GET /nope HTTP/1.1\r\n\r\n")
        assert b" 405 " in await _exchange(port, b"DELETE /hello HTTP/1.1\r\n\r\n")
        assert b" 500 " in await _exchange(port, b"GET /broken HTTP/1.1\r\n\r\n")
    _run(test)


def test_malformed_and_oversized_requests_are_refused_before_any_handler():
    async def test(port, seen):
        assert b" 400 " in await _exchange(port, b"NONSENSE\r\n\r\n")
        assert b" 400 " in await _exchange(port, b"GET / SPDY/3\r\n\r\n")
        assert b" 400 " in await _exchange(port, b"GET /hello HTTP/1.1\r\nno colon\r\n\r\n")
        big = f"POST /hello HTTP/1.1\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
        assert b" 413 " in await _exchange(port, big)
        assert b" 413 " in await _exchange(port, b"GET /hello HTTP/1.1\r\nX: " + b"a" * 20_000
                                           + b"\r\n\r\n")
        assert seen == []  # no handler saw any of them
    _run(test)
