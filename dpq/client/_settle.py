"""Acks, nacks and lease extensions: few messages for many jobs.

Acks, and nacks, from concurrent handlers are gathered into one batch each
(:class:`~dpq.client._coalesce.Coalescer`); a batch of nacks is sent as one
request per (delay, error) it holds, since a NackRequest has one of each.
Lease extensions come from the lease keeper already in one list. A batch goes,
for the jobs of each node whose Consume stream is open (``route``), as one
message on that stream, and for the rest as one unary RPC to any node (the
leader first). A settlement
whose stream broke before it was answered is sent again as a unary RPC: a retry.

A retried ack or nack may find its own first try already applied: the server
then answers ``not_found`` (acked) or ``lease_lost`` (given back). After a
retry those answers count as success; on a first try they are errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sized
from dataclasses import dataclass
from typing import Protocol

from dpq.client._coalesce import Coalescer
from dpq.client._consume_stream import StreamBroken
from dpq.client._endpoints import Endpoints
from dpq.client._held import Held, HoldState, JobRecord
from dpq.client._retry import RetryCounter, RetryPolicy, with_retries
from dpq.client.errors import DpqError, job_ref_error
from dpq.v1 import queue_pb2

log = logging.getLogger("dpq.client")

MAX_REFS = 10_000  # the server's limit per request

# (the server's error or "", whether the call was retried)
_Result = tuple[str, bool]


@dataclass(frozen=True, slots=True)
class _Nack:
    record: JobRecord
    delay_ms: int
    error: str  # NackRequest.error: why, kept as the job's last_error


class Route(Protocol):
    """A node's open Consume stream (``dpq.client._consume_stream.NodeStream``)."""

    async def settle(self, kind: str, refs: list[queue_pb2.JobRef], value: int,
                     timeout: float, error: str = "") -> list[queue_pb2.RefResult]: ...


def _no_route(address: str) -> Route | None:
    return None


class Settler:
    """Sends acks, nacks and extensions for a consumer's held jobs."""

    def __init__(self, endpoints: Endpoints, retry: RetryPolicy, held: Held,
                 timeout: float = 15.0) -> None:
        self.endpoints = endpoints
        self._retry = retry
        self._held = held
        self._timeout = timeout
        self._acks: Coalescer[JobRecord, _Result] = Coalescer(
            self._send_acks, max_items=MAX_REFS, max_inflight=2)
        self._nacks: Coalescer[_Nack, _Result] = Coalescer(
            self._send_nack_batch, max_items=MAX_REFS, max_inflight=2)
        self.counter = RetryCounter()
        #: The open Consume stream to a node's address, if any (set by the consumer).
        self.route: Callable[[str], Route | None] = _no_route

    async def ack(self, record: JobRecord) -> None:
        """Ack the job: done, gone. Raises ``JobRefError`` if the server refuses."""
        await self._settle(record, "ack", lambda: self._acks.submit(record))

    async def nack(self, record: JobRecord, delay_ms: int, error: str = "") -> None:
        """Give the job back, ready again after ``delay_ms``; ``error`` (already cut to
        size) becomes its last_error."""
        await self._settle(record, "nack",
                           lambda: self._nacks.submit(_Nack(record, delay_ms, error)))

    async def release(self, records: list[JobRecord]) -> None:
        """Give back jobs never started (at once, one RPC); failures are only logged."""
        records = [r for r in records if r.state is HoldState.HELD]
        for record in records:
            record.state = HoldState.SETTLED
            self._held.discard(record)
        for start in range(0, len(records), MAX_REFS):
            chunk = records[start:start + MAX_REFS]
            try:
                await self._send_nacks(chunk, 0)
            except Exception as exc:  # noqa: BLE001 - their leases run out instead
                log.warning("could not give back %d jobs (they return when their leases "
                            "run out): %s", len(chunk), exc)

    async def extend(self, records: list[JobRecord], lease_ms: int,
                     within: float | None = None) -> list[str]:
        """Extend the leases by ``lease_ms`` from now; the server's error per record.

        ``within``: give up after this many seconds (retries included).
        """
        retry, timeout = self._retry, self._timeout
        if within is not None:
            retry = dataclasses.replace(retry, deadline=within)
            timeout = min(timeout, within)
        errors: list[str] = []
        for start in range(0, len(records), MAX_REFS):
            chunk = records[start:start + MAX_REFS]
            sent = self._held.clock()

            async def unary(refs: list[queue_pb2.JobRef]) -> list[_Result]:
                return await self._send("ExtendLease", queue_pb2.ExtendLeaseRequest(
                    jobs=refs, lease_ms=lease_ms), retry, timeout)

            results = await self._routed(chunk, "extend", lease_ms, unary, timeout)
            now_us = time.time_ns() // 1000
            for record, (error, _) in zip(chunk, results, strict=True):
                errors.append(error)
                if not error and record.state is HoldState.HELD:
                    record.deadline = max(record.deadline, sent + lease_ms / 1000)
                    record.lease_expires_at_us = now_us + lease_ms * 1000
        return errors

    async def drain(self) -> None:
        """Wait for acks and nacks in flight."""
        for batcher in (self._acks, self._nacks):
            await batcher.drain()

    async def _settle(self, record: JobRecord, action: str,
                      submit: Callable[[], Awaitable[_Result]]) -> None:
        if record.state is HoldState.SETTLED:
            return
        self._held.settling(record)
        try:
            error, retried = await submit()
        finally:
            self._held.discard(record)
        if error and not retried:
            record.state = HoldState.LOST
            raise job_ref_error(record.pb.job_id, record.pb.attempt, error, action)
        if error:
            log.debug("%s of job %d after a retry: %s (taken as done)", action,
                      record.pb.job_id, error)
        record.state = HoldState.SETTLED

    async def _send_acks(self, records: list[JobRecord]) -> list[_Result]:
        return await self._routed(records, "ack", 0,
                                  lambda refs: self._send("Ack", queue_pb2.AckRequest(jobs=refs)))

    async def _send_nack_batch(self, nacks: list[_Nack]) -> list[_Result | BaseException]:
        """One request per (delay, error): jobs never take another job's error."""
        groups: dict[tuple[int, str], list[int]] = {}
        for i, nack in enumerate(nacks):
            groups.setdefault((nack.delay_ms, nack.error), []).append(i)
        results: list[_Result | BaseException] = [("", False)] * len(nacks)

        async def group(delay_ms: int, error: str, indexes: list[int]) -> None:
            try:
                answers = await self._send_nacks([nacks[i].record for i in indexes], delay_ms,
                                                 error)
            except Exception as exc:  # noqa: BLE001 - this group's waiters hear of it, alone
                answers = [exc] * len(indexes)
            for i, answer in zip(indexes, answers, strict=True):
                results[i] = answer

        await asyncio.gather(*(group(d, e, ix) for (d, e), ix in groups.items()))
        return results

    async def _send_nacks(self, records: list[JobRecord], delay_ms: int,
                          error: str = "") -> list[_Result]:
        return await self._routed(records, "nack", delay_ms, lambda refs: self._send(
            "Nack", queue_pb2.NackRequest(jobs=refs, delay_ms=delay_ms, error=error)),
            error=error)

    async def _routed(self, records: list[JobRecord], kind: str, value: int,
                      unary: Callable[[list[queue_pb2.JobRef]], Awaitable[list[_Result]]],
                      timeout: float | None = None, error: str = "") -> list[_Result]:
        """Settle ``records``: all of them on the stream to the settle endpoint (the
        leader, when known: any node takes any job's settlement, and the leader
        proposes it without a hop) when that stream is open, else each on its node's
        open stream, else with ``unary``, which also takes over (as a retry) what a
        broken stream left unanswered. One result per record, in order.

        One stream for the whole batch matters: settling on every node's stream
        makes each node propose its share, three small Paxos slots where one does
        (measured: a fifth less consume + ack throughput on the 2-core machine)."""
        results: list[_Result] = [("", False)] * len(records)
        by_node: dict[str, list[int]] = {}
        preferred = self.endpoints.current()
        if self.route(preferred) is not None:
            by_node[preferred] = list(range(len(records)))
        else:
            for i, record in enumerate(records):
                by_node.setdefault(record.address, []).append(i)
        rest: list[int] = []
        streamed: list[tuple[Route, list[int]]] = []
        for address, indexes in by_node.items():
            stream = self.route(address)
            if stream is None:
                rest += indexes
            else:
                streamed.append((stream, indexes))

        async def by_rpc(indexes: list[int], retry: bool = False) -> None:
            if indexes:
                answers = await unary([records[i].ref for i in indexes])
                for i, (refusal, retried) in zip(indexes, answers, strict=True):
                    results[i] = (refusal, retried or retry)

        async def on_stream(stream: Route, indexes: list[int]) -> None:
            refs = [records[i].ref for i in indexes]
            try:
                answers = await stream.settle(kind, refs, value, timeout or self._timeout,
                                              error)
            except StreamBroken as exc:
                log.debug("%s of %d jobs: %s; sent again as an RPC", kind, len(refs), exc)
                self.counter.retries += 1
                await by_rpc(indexes, retry=True)
                return
            _check_answers(answers, refs, f"Consume ({kind})")
            for i, answer in zip(indexes, answers, strict=True):
                results[i] = (answer.error, False)

        await asyncio.gather(by_rpc(rest), *(on_stream(s, ix) for s, ix in streamed))
        return results

    async def _send(self, method: str, request: queue_pb2.AckRequest | queue_pb2.NackRequest
                    | queue_pb2.ExtendLeaseRequest, retry: RetryPolicy | None = None,
                    timeout: float | None = None) -> list[_Result]:
        tries = 0

        async def attempt(address: str) -> queue_pb2.RefResponse:
            nonlocal tries
            tries += 1
            rpc = getattr(self.endpoints.channels.stub(address), method)
            return await rpc(request, timeout=timeout or self._timeout)

        response = await with_retries(self.endpoints, retry or self._retry, method, attempt,
                                      self.counter, clock=self._held.clock)
        _check_answers(response.results, request.jobs, method)
        return [(r.error, tries > 1) for r in response.results]


def _check_answers(results: Sized, asked: Sized, method: str) -> None:
    if len(results) != len(asked):
        raise DpqError(f"{method}: {len(results)} results for {len(asked)} jobs")
