"""One node's Consume stream: credits out, pushed jobs in, settlements both ways.

Replaces the long-poll loop (:class:`~dpq.client._poller.NodePoller`) where the
node serves ``Consume``: one message per push instead of one Dequeue round
trip per batch, and acks, nacks and extensions for this node's jobs ride the
same stream (:meth:`NodeStream.settle`), credits beside them.

Credits follow :class:`~dpq.client._held.Held`: what the stream granted and
has not received counts as reserved, received jobs use it up, and a stream
that breaks gives the rest back (``unreserve``). A stream with no credits left
gets more as soon as there is room; one that still has some adds more only in
steps of half of ``max_jobs``, or beside a settlement, so that a busy consumer
does not send a credit message per job.

The node answers the opening at once with what it had ready (maybe nothing):
then ``answered`` is set, as after a long-poll's first round. It says something
at least every ``wait`` seconds; a stream silent for much longer is opened again. A pushed job's
lease is taken to end ``lease`` seconds after the credit message that allowed
it was sent, never later than the node's deadline.

A stream that fails is opened again with :class:`RetryPolicy` backoff; a node
(or gateway) without ``Consume`` (``UNIMPLEMENTED``) is long-polled instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence

import grpc

from dpq.client._endpoints import Channels
from dpq.client._held import Held, JobRecord
from dpq.client._poller import DEQUEUE_MARGIN_S, FATAL, NodePoller, PollSpec
from dpq.client._retry import RetryPolicy
from dpq.client.errors import ServerError, server_error
from dpq.v1 import queue_pb2

log = logging.getLogger("dpq.client")

#: At close, how long the node may take to send what it leased before the stream ends.
FINISH_S = 2.0


class StreamBroken(Exception):
    """The stream ended (or went silent) before a settlement was answered: it may or may
    not have been applied."""


class NodeStream(NodePoller):
    """Consumes one node over a Consume stream for as long as it runs; a node without
    Consume is long-polled instead (the inherited loop)."""

    def __init__(self, address: str, channels: Channels, spec: PollSpec, held: Held,
                 retry: RetryPolicy, deliver: Callable[[JobRecord], None],
                 fatal: Callable[[ServerError], None]) -> None:
        # ``answered`` is set once the node answered the opening (or failed): see the
        # module's doc.
        super().__init__(address, channels, spec, held, retry, deliver, fatal)
        self.pushes = 0  # messages with jobs received, for stats
        self._call: grpc.aio.StreamStreamCall | None = None
        self._served = False  # the open call answered its opening: settlements may use it
        self._finishing = False
        self._closer: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[list[queue_pb2.RefResult]]] = {}
        self._outstanding = 0  # credits granted on the open call and not yet used
        self._granted = 0  # on the open call, in total
        self._received = 0
        # (total granted after a credit message, when it was sent), oldest first
        self._sent: deque[tuple[int, float]] = deque()

    @property
    def ready(self) -> bool:
        """Whether settlements can go on the stream now."""
        return self._served and self._call is not None and not self._finishing

    def finish(self) -> bool:
        """Stop asking for jobs: the node sends what it leased already and ends the stream.

        Whether a stream is open to finish (else there is nothing to wait for)."""
        self._finishing = True
        call = self._call
        if call is None or not self._served:
            return False
        self._closer = asyncio.get_running_loop().create_task(self._half_close(call))
        return True

    async def run(self) -> None:
        """Consume until cancelled, finished, or a fatal status; long-poll a node without
        Consume."""
        try:
            await self._run()
        finally:
            self.answered.set()
            self._broken()

    async def _run(self) -> None:
        if self.failures:
            await asyncio.sleep(self._retry.backoff(self.failures - 1))
        while not self._finishing:
            try:
                await self._session()
                if self._finishing:
                    return
                # The node ended the stream (it is stopping): open it again, after a pause.
                self.failures += 1
                await asyncio.sleep(self._retry.backoff(self.failures - 1))
                continue
            except grpc.aio.AioRpcError as exc:
                self._broken()
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    log.info("%s serves no Consume stream: long-polling it", self.address)
                    self.failures = 0
                    await self._poll()
                    return
                self.answered.set()
                if exc.code() in FATAL:
                    self._fatal(server_error(exc.code(), exc.details() or "", "Consume",
                                             self.address))
                    return
                await self._back_off(exc, "Consume stream to")

    async def _session(self) -> None:
        spec = self._spec
        call = self._call = self._channels.stub(self.address).Consume()
        self._outstanding = self._granted = self._received = 0
        self._sent.clear()
        opening = queue_pb2.ConsumeOpen(queue=spec.queue,
                                        lease_ms=max(1, round(spec.lease_s * 1000)),
                                        consumer_id=spec.consumer_id,
                                        wait_ms=max(0, round(spec.wait_s * 1000)))
        # The node says something at least every wait_s: silence past the margin is a lost node.
        silent_s = spec.wait_s + DEQUEUE_MARGIN_S if spec.wait_s > 0 else None
        granter: asyncio.Task[None] | None = None
        try:
            with contextlib.suppress(StreamBroken):  # the call failed: reading raises why
                await self._write(call, lambda n: queue_pb2.ConsumeRequest(open=opening,
                                                                           credits=n),
                                  at_least=1, always=True)
            while True:
                try:
                    response = await asyncio.wait_for(call.read(), silent_s)
                except TimeoutError:
                    raise grpc.aio.AioRpcError(
                        grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(),
                        grpc.aio.Metadata(), f"no message for {silent_s:.0f}s") from None
                if response is grpc.aio.EOF:
                    if await call.code() != grpc.StatusCode.OK:
                        raise await _error_of(call)
                    return
                if response.request_id:
                    future = self._pending.pop(response.request_id, None)
                    if future is not None and not future.done():
                        future.set_result(list(response.results))
                else:
                    self._receive(response.jobs)
                if not self._served:
                    self._served = True
                    if self.failures:
                        log.info("node %s answers on its Consume stream again", self.address)
                    self.failures = 0
                    self.answered.set()
                    granter = asyncio.get_running_loop().create_task(self._grant(call))
        finally:
            if granter is not None:
                granter.cancel()
                await asyncio.gather(granter, return_exceptions=True)
            if self._call is call:
                call.cancel()
            self._broken()

    # ---------------------------------------------------------------- credits

    async def _grant(self, call: grpc.aio.StreamStreamCall) -> None:
        """Top the node's credits up whenever the consumer has room (see the module's doc)."""
        max_jobs = self._spec.max_jobs
        while not self._finishing:
            change = self._held.changes
            at_least = 1 if self._outstanding == 0 else max(1, max_jobs // 2)
            with contextlib.suppress(StreamBroken):
                await self._write(call, lambda n: queue_pb2.ConsumeRequest(credits=n), at_least)
            await change.wait()

    async def _write(self, call: grpc.aio.StreamStreamCall,
                     make: Callable[[int], queue_pb2.ConsumeRequest], at_least: int,
                     always: bool = False) -> None:
        """Write ``make(credits)`` with whatever credits there is room for (at least
        ``at_least``, else none); a message with none is written only if ``always``."""
        async with self._write_lock:
            if self._call is not call:
                raise StreamBroken(f"the Consume stream to {self.address} ended")
            n = 0 if self._finishing else self._held.top_up(self._spec.max_jobs,
                                                            self._outstanding, at_least)
            if not n and not always:
                return
            if n:
                self._outstanding += n
                self._granted += n
                self._sent.append((self._granted, self._held.clock()))
            try:
                await call.write(make(n))
            except Exception as exc:  # noqa: BLE001 - the call ended; its reader has the status
                raise StreamBroken(f"the Consume stream to {self.address} ended: {exc}") from None

    def _receive(self, jobs: Sequence[queue_pb2.Job]) -> None:
        if not jobs:
            return
        self.pushes += 1
        spec, held = self._spec, self._held
        self._received += len(jobs)
        if len(jobs) > self._outstanding:
            log.warning("node %s pushed %d jobs on %d credits", self.address, len(jobs),
                        self._outstanding)
        # The Lease was proposed after the node had credits for these jobs, so
        # after the credit message that made them up was sent.
        sent = held.clock()  # (no credit message at all: a node pushing unasked)
        while self._sent and self._sent[0][0] < self._received:
            sent = self._sent.popleft()[1]
        if self._sent:
            sent = self._sent[0][1]
        used = min(len(jobs), self._outstanding)
        self._outstanding -= used
        records = [JobRecord(pb, self.address, sent + spec.lease_s, sent + spec.max_hold_s,
                             pb.lease_expires_at_us) for pb in jobs]
        held.receive(used, records)
        for record in records:
            self._deliver(record)

    # ------------------------------------------------------------ settlements

    async def settle(self, kind: str, refs: Sequence[queue_pb2.JobRef], value: int,
                     timeout: float, error: str = "") -> list[queue_pb2.RefResult]:
        """Ack (``kind`` "ack"), nack (delay ``value`` ms, ``error`` the jobs' last_error)
        or extend (by ``value`` ms) on the stream; one result per ref. Raises
        :class:`StreamBroken` if no answer comes."""
        call = self._call
        if call is None or not self.ready:
            raise StreamBroken(f"no Consume stream to {self.address} is open")
        request_id = next(self._ids)
        future: asyncio.Future[list[queue_pb2.RefResult]] = \
            asyncio.get_running_loop().create_future()
        self._pending[request_id] = future

        def message(credits: int) -> queue_pb2.ConsumeRequest:
            request = queue_pb2.ConsumeRequest(request_id=request_id, credits=credits)
            if kind == "ack":
                request.ack.jobs.extend(refs)
            elif kind == "nack":
                request.nack.jobs.extend(refs)
                request.nack.delay_ms = value
                request.nack.error = error
            else:
                request.extend.jobs.extend(refs)
                request.extend.lease_ms = value
            return request

        try:
            await self._write(call, message, at_least=1, always=True)
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            if self._call is call:
                call.cancel()  # silent for too long: open a new one
            raise StreamBroken(f"no answer on the Consume stream to {self.address} "
                               f"within {timeout}s") from None
        finally:
            self._pending.pop(request_id, None)

    # ---------------------------------------------------------------- endings

    def _broken(self) -> None:
        """The open call is over: its unused credits and unanswered settlements with it."""
        self._call = None
        self._served = False
        if self._outstanding:
            self._held.unreserve(self._outstanding)
            self._outstanding = 0
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(StreamBroken(
                    f"the Consume stream to {self.address} ended before the answer"))

    async def _half_close(self, call: grpc.aio.StreamStreamCall) -> None:
        async with self._write_lock:
            with contextlib.suppress(Exception):  # already over
                await call.done_writing()



async def _error_of(call: grpc.aio.StreamStreamCall) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(await call.code(), await call.initial_metadata(),
                                await call.trailing_metadata(), await call.details())
