"""Per-connection admission for Enqueue: one client's flood cannot fill the proposer.

Every Enqueue of a node or gateway ends in one shared proposer, which packs
whatever is pending into the next Paxos slot, first come first served. A client
that keeps hundreds of big batches in flight therefore puts all of them ahead
of a well-behaved client's single job, and every slot it rides in is as big as
the flood makes it: its round trip went from ~0.1 s to ~2 s in issue 10.

The gate lets each connection (gRPC ``context.peer()``: one client channel)
have at most ``max_requests`` requests and ``max_jobs`` jobs in the proposer at
once; its further requests wait in that connection's own queue, in order, and
enter as its earlier ones finish. So what is pending in the proposer is a few
requests from each active connection, interleaved, and a quiet client's
request enters at once and rides in one of the next slots. A request bigger
than ``max_jobs`` is admitted alone. Pipelining producers keep their
throughput: ``max_requests`` is above what the client library keeps in flight.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_REQUESTS = 4
DEFAULT_MAX_JOBS = 4_000


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """In flight per connection; 0 turns a limit off (both 0: no gate)."""

    max_requests: int = DEFAULT_MAX_REQUESTS
    max_jobs: int = DEFAULT_MAX_JOBS


DEFAULT_LIMITS = AdmissionLimits()


class _Connection:
    __slots__ = ("jobs", "requests", "waiting")

    def __init__(self) -> None:
        self.requests = 0
        self.jobs = 0
        self.waiting: deque[tuple[int, asyncio.Future[None]]] = deque()


class AdmissionGate:
    def __init__(self, limits: AdmissionLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._on = bool(limits.max_requests or limits.max_jobs)
        self._connections: dict[str, _Connection] = {}
        #: Requests that had to wait their turn (for tests and counters).
        self.waited = 0

    def in_flight(self, client: str) -> tuple[int, int]:
        """Requests and jobs of ``client`` admitted and not yet finished."""
        conn = self._connections.get(client)
        return (conn.requests, conn.jobs) if conn else (0, 0)

    @asynccontextmanager
    async def admit(self, client: str, jobs: int) -> AsyncIterator[None]:
        """Hold one of ``client``'s places for a request of ``jobs`` jobs."""
        if not self._on:
            yield
            return
        conn = self._connections.get(client)
        if conn is None:
            conn = self._connections[client] = _Connection()
        if not conn.waiting and self._fits(conn, jobs):
            self._take(conn, jobs)
        else:
            self.waited += 1
            entry = (jobs, asyncio.get_running_loop().create_future())
            conn.waiting.append(entry)
            try:
                await entry[1]
            except BaseException:
                if entry[1].done() and not entry[1].cancelled():
                    self._release(client, conn, jobs)  # admitted just as it was cancelled
                else:
                    conn.waiting.remove(entry)
                    self._wake(client, conn)
                raise
        try:
            yield
        finally:
            self._release(client, conn, jobs)

    def _fits(self, conn: _Connection, jobs: int) -> bool:
        if conn.requests == 0:
            return True
        limits = self.limits
        return ((not limits.max_requests or conn.requests < limits.max_requests)
                and (not limits.max_jobs or conn.jobs + jobs <= limits.max_jobs))

    @staticmethod
    def _take(conn: _Connection, jobs: int) -> None:
        conn.requests += 1
        conn.jobs += jobs

    def _release(self, client: str, conn: _Connection, jobs: int) -> None:
        conn.requests -= 1
        conn.jobs -= jobs
        self._wake(client, conn)

    def _wake(self, client: str, conn: _Connection) -> None:
        while conn.waiting and self._fits(conn, conn.waiting[0][0]):
            jobs, future = conn.waiting.popleft()
            self._take(conn, jobs)
            future.set_result(None)
        if conn.requests == 0 and not conn.waiting:
            self._connections.pop(client, None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags, with ``None`` defaults (so a node's TOML file can set them too)."""
    parser.add_argument(
        "--client-max-inflight-requests", type=int,
        help="Enqueue requests one client connection may have in progress at once; more wait "
             f"their turn, so one client's flood cannot delay others (0 = no limit; "
             f"{DEFAULT_MAX_REQUESTS})")
    parser.add_argument(
        "--client-max-inflight-jobs", type=int,
        help="jobs one client connection may have in progress at once (a bigger request "
             f"goes alone; 0 = no limit; {DEFAULT_MAX_JOBS})")


def from_values(values: dict[str, Any]) -> AdmissionLimits:
    """Pop this module's keys from ``values`` (flags or TOML)."""
    requests = values.pop("client_max_inflight_requests", None)
    jobs = values.pop("client_max_inflight_jobs", None)
    limits = AdmissionLimits(DEFAULT_MAX_REQUESTS if requests is None else requests,
                             DEFAULT_MAX_JOBS if jobs is None else jobs)
    if limits.max_requests < 0 or limits.max_jobs < 0:
        raise ValueError("--client-max-inflight-requests and --client-max-inflight-jobs "
                         "cannot be negative (0 = no limit)")
    return limits
