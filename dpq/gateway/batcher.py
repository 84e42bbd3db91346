"""Enqueue requests in, batched proposals to the leader out.

Concurrent Enqueue calls are buffered and proposed together: one Propose to
the leader, one Paxos slot and one fsync per node for the whole batch. A batch
leaves when it holds ``max_batch`` jobs, when ``max_delay`` has passed, or at
once when nothing is in flight (so under light load a single job is not held
back). Up to ``max_inflight`` batches are in flight at a time.

Every job gets an owner node here, from the smooth weighted round-robin
(``dpq._wrr``) with weights from the nodes' live health (``dpq.balancer``).

A batch carries the gateway's ``(client_id, seq)`` and is retried with the
same pair — at the new leader after a leader change — so it is applied once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence

import grpc

from dpq import balancer
from dpq._wrr import SmoothWRR
from dpq.gateway.monitor import HealthMonitor
from dpq.node.proposer import SeqWindow
from dpq.errors import ResourceExhausted, Unavailable
from dpq.queue.validate import InvalidArgument
from dpq.v1 import log_pb2, queue_pb2, replication_pb2

log = logging.getLogger("dpq.gateway.batcher")

WEIGHTS_REFRESH_S = 0.1


class EnqueueBatcher:
    def __init__(self, monitor: HealthMonitor, *, max_batch: int = 1000, max_delay_ms: float = 2.0,
                 max_inflight: int = 4, dedup_window_ms: int = 3_600_000,
                 attempt_timeout_s: float = 3.0, deadline_s: float = 15.0) -> None:
        self.client_id = f"gateway-{uuid.uuid4().hex[:12]}"
        self._monitor = monitor
        self.max_batch = max_batch
        self._max_delay_s = max_delay_ms / 1000
        self._slots = asyncio.Semaphore(max_inflight)
        self._dedup_window_us = dedup_window_ms * 1000
        self._attempt_timeout_s = attempt_timeout_s
        self._deadline_s = deadline_s
        self._seq = 0
        self._window = SeqWindow()
        self._pending: list[tuple[Sequence[queue_pb2.NewJob], asyncio.Future]] = []
        self._pending_jobs = 0
        self._inflight = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._wrr = SmoothWRR()
        self._weights_at = 0.0
        self._weights_version = -1
        self.weights: dict[int, int] = {}
        self.assigned: Counter[int] = Counter()  # jobs given to each node
        self._task: asyncio.Task | None = None
        # Observed batch sizes (for the benchmark).
        self.batches = 0
        self.jobs = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="enqueue-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for _, future in self._pending:
            if not future.done():
                future.set_exception(Unavailable("gateway stopping", None))

    async def enqueue(self, jobs: Sequence[queue_pb2.NewJob]) -> list[int]:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((jobs, future))
        self._pending_jobs += len(jobs)
        if self._pending_jobs >= self.max_batch:
            self._full.set()
        self._wake.set()
        return await future

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                if self._inflight and self._pending_jobs < self.max_batch:
                    # Batches are in flight: let this one fill a little.
                    try:
                        await asyncio.wait_for(self._full.wait(), self._max_delay_s)
                    except TimeoutError:
                        pass
                await self._slots.acquire()
                await self._window.admit(self._seq + 1)
                self._full.clear()
                batch = self._take()
                self._inflight += 1
                self._seq += 1
                asyncio.create_task(self._send(self._seq, batch))

    def _take(self) -> list[tuple[Sequence[queue_pb2.NewJob], asyncio.Future]]:
        taken, count = [], 0
        while self._pending and (not taken or count + len(self._pending[0][0]) <= self.max_batch):
            jobs, future = self._pending.pop(0)
            taken.append((jobs, future))
            count += len(jobs)
        self._pending_jobs -= count
        return taken

    def _owners(self, n: int) -> list[int]:
        now = time.monotonic()
        if (now - self._weights_at >= WEIGHTS_REFRESH_S or not self.weights
                or self._monitor.version != self._weights_version):
            self._weights_at, self._weights_version = now, self._monitor.version
            ids, ws = balancer.weights(self._monitor.health())
            if not any(ws):
                raise Unavailable("no node is reachable to own new jobs", None)
            if dict(zip(ids, ws)) != self.weights:
                self._wrr.set_weights(ids, ws)
                self.weights = dict(zip(ids, ws))
        owners = list(self._wrr.pick_many(n))
        self.assigned.update(owners)
        return owners

    async def _send(self, seq: int, batch) -> None:
        try:
            jobs = [job for request_jobs, _ in batch for job in request_jobs]
            try:
                command = log_pb2.EnqueueCommand(jobs=jobs, owners=self._owners(len(jobs)),
                                                 dedup_window_us=self._dedup_window_us)
                data = log_pb2.CommandBatch(commands=[log_pb2.Command(enqueue=command)]).SerializeToString()
                self.batches += 1
                self.jobs += len(jobs)
                ids = await self._propose(seq, data)
            except Exception as exc:  # noqa: BLE001 - every caller must hear of it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            start = 0
            for request_jobs, future in batch:
                if not future.done():
                    future.set_result(ids[start:start + len(request_jobs)])
                start += len(request_jobs)
        finally:
            self._window.done(seq)
            self._inflight -= 1
            self._slots.release()
            self._wake.set()

    async def _propose(self, seq: int, data: bytes) -> list[int]:
        deadline = time.monotonic() + self._deadline_s
        backoff, last_error = 0.02, "no leader known yet"
        request = replication_pb2.ProposeRequest(client_id=self.client_id, seq=seq, batch=data)
        while time.monotonic() < deadline:
            leader = self._monitor.leader()
            if leader is not None:
                try:
                    response = await leader.replication.Propose(request, timeout=self._attempt_timeout_s)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise ResourceExhausted(exc.details()) from exc
                    last_error = f"{leader.address} said {exc.code().name}: {exc.details()}"
                else:
                    [result] = response.results or [None]
                    if result is None:
                        raise Unavailable(
                            "the batch was committed earlier but its job ids are no longer "
                            "remembered; its jobs are enqueued", None)
                    if result.error:
                        raise InvalidArgument(result.error)
                    return list(result.job_ids)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.5)
        leader = self._monitor.leader()
        raise Unavailable(f"no leader committed the batch within {self._deadline_s}s ({last_error})",
                          leader.address if leader else None)
