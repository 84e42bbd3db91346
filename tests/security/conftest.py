"""Fixtures of the security tests: TLS material made by ``dpq certs init``, and real
grpc.aio servers on 127.0.0.1 running on a background event loop.

``serve(register, credentials=None, interceptors=())`` starts a server (``register(server)``
adds its services), returns ``127.0.0.1:<port>`` and stops it after the test. The
server has its own loop thread, so a test may talk to it with the blocking
``grpc`` API, the sync dpq client, or ``asyncio.run`` of grpc.aio calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence

import grpc
import pytest

from dpq.security import certs


@pytest.fixture(scope="session")
def tls_dir(tmp_path_factory) -> str:
    """A cluster's material for 3 nodes (hosts 127.0.0.1, localhost, ::1)."""
    directory = str(tmp_path_factory.mktemp("tls") / "cluster")
    certs.init(directory, 3)
    return directory


@pytest.fixture(scope="session")
def other_dir(tmp_path_factory) -> str:
    """Another cluster's material: another CA, the same names."""
    directory = str(tmp_path_factory.mktemp("tls") / "other")
    certs.init(directory, 3)
    return directory


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-server",
                                       daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


Register = Callable[[grpc.aio.Server], None]


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    loop = _LoopThread()
    servers: list[grpc.aio.Server] = []

    def start(register: Register, credentials: grpc.ServerCredentials | None = None,
              interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> str:
        async def make() -> int:
            server = grpc.aio.server(interceptors=list(interceptors))
            register(server)
            port = (server.add_secure_port("127.0.0.1:0", credentials) if credentials
                    else server.add_insecure_port("127.0.0.1:0"))
            await server.start()
            servers.append(server)
            return port

        return f"127.0.0.1:{loop.run(make())}"

    try:
        yield start
    finally:
        for server in servers:
            loop.run(server.stop(0))
        loop.close()
