"""Acks, nacks and lease extensions: few RPCs for many jobs, any node will do.

Acks (and nacks with the same delay) from concurrent handlers are gathered
into one RPC (:class:`~dpq.client._coalesce.Coalescer`). Lease extensions come
from the lease keeper already in one list and go as one RPC.

A retried ack or nack may find its own first try already applied: the server
then answers ``not_found`` (acked) or ``lease_lost`` (given back). After a
retry those answers count as success; on a first try they are errors.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sized

from dpq.client._coalesce import Coalescer
from dpq.client._endpoints import Endpoints
from dpq.client._held import Held, HoldState, JobRecord
from dpq.client._retry import RetryCounter, RetryPolicy, with_retries
from dpq.client.errors import DpqError, job_ref_error
from dpq.v1 import queue_pb2

log = logging.getLogger("dpq.client")

MAX_REFS = 10_000  # the server's limit per request

# (the server's error or "", whether the call was retried)
_Result = tuple[str, bool]


class Settler:
    """Sends acks, nacks and extensions for a consumer's held jobs."""

    def __init__(self, endpoints: Endpoints, retry: RetryPolicy, held: Held,
                 timeout: float = 15.0) -> None:
        self.endpoints = endpoints
        self._retry = retry
        self._held = held
        self._timeout = timeout
        self._acks: Coalescer[queue_pb2.JobRef, _Result] = Coalescer(
            self._send_acks, max_items=MAX_REFS, max_inflight=2)
        self._nacks: dict[int, Coalescer[queue_pb2.JobRef, _Result]] = {}
        self.counter = RetryCounter()

    async def ack(self, record: JobRecord) -> None:
        """Ack the job: done, gone. Raises ``JobRefError`` if the server refuses."""
        await self._settle(record, "ack", self._acks)

    async def nack(self, record: JobRecord, delay_ms: int) -> None:
        """Give the job back, ready again after ``delay_ms``."""
        batcher = self._nacks.get(delay_ms)
        if batcher is None:
            batcher = self._nacks[delay_ms] = Coalescer(
                lambda refs: self._send_nacks(refs, delay_ms), max_items=MAX_REFS, max_inflight=2)
        await self._settle(record, "nack", batcher)

    async def release(self, records: list[JobRecord]) -> None:
        """Give back jobs never started (at once, one RPC); failures are only logged."""
        records = [r for r in records if r.state is HoldState.HELD]
        for record in records:
            record.state = HoldState.SETTLED
            self._held.discard(record)
        for start in range(0, len(records), MAX_REFS):
            chunk = records[start:start + MAX_REFS]
            try:
                await self._send_nacks([r.ref for r in chunk], 0)
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
            request = queue_pb2.ExtendLeaseRequest(jobs=[r.ref for r in chunk], lease_ms=lease_ms)
            sent = self._held.clock()

            async def attempt(address: str, request: queue_pb2.ExtendLeaseRequest = request,
                              ) -> queue_pb2.RefResponse:
                return await self.endpoints.channels.stub(address).ExtendLease(
                    request, timeout=timeout)

            response = await with_retries(self.endpoints, retry, "ExtendLease", attempt,
                                          self.counter, clock=self._held.clock)
            _check_answers(response, chunk, "ExtendLease")
            now_us = time.time_ns() // 1000
            for record, result in zip(chunk, response.results, strict=True):
                errors.append(result.error)
                if not result.error and record.state is HoldState.HELD:
                    record.deadline = max(record.deadline, sent + lease_ms / 1000)
                    record.lease_expires_at_us = now_us + lease_ms * 1000
        return errors

    async def drain(self) -> None:
        """Wait for acks and nacks in flight."""
        for batcher in [self._acks, *self._nacks.values()]:
            await batcher.drain()

    async def _settle(self, record: JobRecord, action: str,
                      batcher: Coalescer[queue_pb2.JobRef, _Result]) -> None:
        if record.state is HoldState.SETTLED:
            return
        self._held.settling(record)
        try:
            error, retried = await batcher.submit(record.ref)
        finally:
            self._held.discard(record)
        if error and not retried:
            record.state = HoldState.LOST
            raise job_ref_error(record.pb.job_id, record.pb.attempt, error, action)
        if error:
            log.debug("%s of job %d after a retry: %s (taken as done)", action,
                      record.pb.job_id, error)
        record.state = HoldState.SETTLED

    async def _send_acks(self, refs: list[queue_pb2.JobRef]) -> list[_Result]:
        request = queue_pb2.AckRequest(jobs=refs)
        return await self._send("Ack", request)

    async def _send_nacks(self, refs: list[queue_pb2.JobRef], delay_ms: int) -> list[_Result]:
        request = queue_pb2.NackRequest(jobs=refs, delay_ms=delay_ms)
        return await self._send("Nack", request)

    async def _send(self, method: str, request: queue_pb2.AckRequest | queue_pb2.NackRequest,
                    ) -> list[_Result]:
        tries = 0

        async def attempt(address: str) -> queue_pb2.RefResponse:
            nonlocal tries
            tries += 1
            rpc = getattr(self.endpoints.channels.stub(address), method)
            return await rpc(request, timeout=self._timeout)

        response = await with_retries(self.endpoints, self._retry, method, attempt, self.counter,
                                      clock=self._held.clock)
        _check_answers(response, request.jobs, method)
        return [(r.error, tries > 1) for r in response.results]


def _check_answers(response: queue_pb2.RefResponse, asked: Sized, method: str) -> None:
    if len(response.results) != len(asked):
        raise DpqError(f"{method}: {len(response.results)} results for {len(asked)} jobs")
