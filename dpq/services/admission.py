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

Per-connection limits alone do not bound the total when many clients flood at
once, and a quiet client's job waits behind everything admitted before it (the
proposer, Paxos and ``apply`` are first come first served): its round trip is
about the jobs in flight divided by the rate the cluster takes them. So
``max_total_jobs`` caps the jobs in flight over all connections; when it is
reached, the next place that frees goes to the waiting connection with the
fewest jobs in flight (then the one served longest ago). A connection with
nothing in flight does not even wait for that: it may take the total up to
twice ``max_total_jobs`` (a bounded express lane), so a quiet client's job
enters the proposer at once, behind at most ``max_total_jobs`` of the flood.
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
DEFAULT_MAX_TOTAL_JOBS = 2_000


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """In flight per connection, and jobs over all; 0 turns a limit off (all 0: no gate)."""

    max_requests: int = DEFAULT_MAX_REQUESTS
    max_jobs: int = DEFAULT_MAX_JOBS
    max_total_jobs: int = DEFAULT_MAX_TOTAL_JOBS


DEFAULT_LIMITS = AdmissionLimits()


class _Connection:
    __slots__ = ("jobs", "requests", "served", "waiting")

    def __init__(self) -> None:
        self.requests = 0
        self.jobs = 0
        self.served = 0  # when it was last admitted (a count); 0: never
        self.waiting: deque[tuple[int, asyncio.Future[None]]] = deque()  # (jobs, future)


class AdmissionGate:
    def __init__(self, limits: AdmissionLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._on = bool(limits.max_requests or limits.max_jobs or limits.max_total_jobs)
        self._connections: dict[str, _Connection] = {}
        self._admissions = 0
        #: Jobs admitted and not yet finished, over all connections.
        self.total_jobs = 0
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
        if not conn.waiting and self._fits(conn, jobs) and (
                self._express(conn, jobs)
                or (self._fits_total(jobs) and not self._others_wait_for_total())):
            self._take(conn, jobs)
        else:
            self.waited += 1
            entry = (jobs, asyncio.get_running_loop().create_future())
            conn.waiting.append(entry)
            try:
                await entry[1]
            except BaseException:
                if entry[1].done() and not entry[1].cancelled():
                    self._release(conn, jobs)  # admitted just as it was cancelled
                else:
                    if entry in conn.waiting:  # (not if _dispatch dropped it as cancelled)
                        conn.waiting.remove(entry)
                    self._dispatch()
                raise
        try:
            yield
        finally:
            self._release(conn, jobs)

    def _fits(self, conn: _Connection, jobs: int) -> bool:
        if conn.requests == 0:
            return True
        limits = self.limits
        return ((not limits.max_requests or conn.requests < limits.max_requests)
                and (not limits.max_jobs or conn.jobs + jobs <= limits.max_jobs))

    def _fits_total(self, jobs: int) -> bool:
        limit = self.limits.max_total_jobs
        return not limit or self.total_jobs == 0 or self.total_jobs + jobs <= limit

    def _express(self, conn: _Connection, jobs: int) -> bool:
        """A connection with nothing in flight goes at once, over the total, up to twice it."""
        limit = self.limits.max_total_jobs
        return conn.requests == 0 and (not limit or self.total_jobs + jobs <= 2 * limit)

    def _others_wait_for_total(self) -> bool:
        return any(c.waiting and self._fits(c, c.waiting[0][0])
                   for c in self._connections.values())

    def _take(self, conn: _Connection, jobs: int) -> None:
        conn.requests += 1
        conn.jobs += jobs
        self.total_jobs += jobs
        self._admissions += 1
        conn.served = self._admissions

    def _release(self, conn: _Connection, jobs: int) -> None:
        conn.requests -= 1
        conn.jobs -= jobs
        self.total_jobs -= jobs
        self._dispatch()

    def _dispatch(self) -> None:
        """Admit waiting heads while they fit: the connection with the fewest jobs in
        flight first, then the one served longest ago (round-robin, not by arrival:
        a flood's oldest request must not beat a quiet client's new one)."""
        while True:
            best: _Connection | None = None
            for conn in self._connections.values():
                if conn.waiting and self._fits(conn, conn.waiting[0][0]) and (
                        best is None or (conn.jobs, conn.served) < (best.jobs, best.served)):
                    best = conn
            if best is None or not self._fits_total(best.waiting[0][0]):
                break
            jobs, future = best.waiting.popleft()
            if future.cancelled():  # its task has not run its clean-up yet
                continue
            self._take(best, jobs)
            future.set_result(None)
        for client in [c for c, conn in self._connections.items()
                       if conn.requests == 0 and not conn.waiting]:
            del self._connections[client]


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
    parser.add_argument(
        "--max-inflight-jobs", type=int,
        help="Enqueue jobs in progress at once over all clients; when reached, the client with "
             f"the fewest in progress goes next (0 = no limit; {DEFAULT_MAX_TOTAL_JOBS})")


def from_values(values: dict[str, Any]) -> AdmissionLimits:
    """Pop this module's keys from ``values`` (flags or TOML)."""
    def pop(key: str, default: int) -> int:
        value = values.pop(key, None)
        if value is not None and value < 0:
            raise ValueError(f"--{key.replace('_', '-')} {value}: cannot be negative "
                             "(0 = no limit)")
        return default if value is None else value

    limits = AdmissionLimits(pop("client_max_inflight_requests", DEFAULT_MAX_REQUESTS),
                             pop("client_max_inflight_jobs", DEFAULT_MAX_JOBS),
                             pop("max_inflight_jobs", DEFAULT_MAX_TOTAL_JOBS))
    return limits
