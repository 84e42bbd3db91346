"""Consume streams: push leased jobs to a consumer as they commit, within its credits.

A consumer opens one ``Consume`` stream per node and sends credits: how many
more jobs it can hold. A :class:`ConsumeSession` leases ready jobs for it
through the same path as a long-poll (:meth:`Dispatcher.lease`: reserve from
the heap, one Lease command, the grants) — everything ready up to the credits
in one command — and pushes them; with no credits it leases nothing. With
credits and nothing ready it parks on the dispatcher like a long-poll, so an
applied batch that makes jobs ready wakes every session of the queue, and each
leases up to its own credits (the heap hands each job to one of them).

Settlements on the stream go through the node's unary ack/nack/extend and are
answered with the request's ``request_id``. A stream silent for the opening's
``wait_ms`` gets an empty message, so the consumer can tell a quiet node from
a lost one. A bad field ends the stream with
``INVALID_ARGUMENT`` naming it (``ack.jobs[2].attempt``, ``credits``, …), and
so does any failure to lease or settle (``UNAVAILABLE`` without a leader): the
client reconnects and settles what was unanswered through the unary RPCs.

A stream that ends releases nothing early: jobs pushed keep their leases until
they are settled or run out. Jobs the consumer never got go back at once,
without costing an attempt: those whose Lease commits after the stream is gone,
and those leased but still waiting to be written when it went.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from dpq.node.dispatcher import Dispatcher
from dpq.queue import validate
from dpq.queue.results import refusal_to_pb
from dpq.queue.validate import InvalidArgument
from dpq.v1 import queue_pb2

log = logging.getLogger("dpq.node.consume")

#: A push larger than this goes as several messages (the client takes 64 MiB at most).
MAX_PUSH_BYTES = 4 << 20

_END = object()  # the stream is finished: no more responses


class Settlements(Protocol):
    """The node's settlements (``NodeOperations``): per reference "" or why not."""

    async def ack(self, refs: Sequence[queue_pb2.JobRef]) -> list[str]: ...
    async def nack(self, refs: Sequence[queue_pb2.JobRef], delay_ms: int,
                   error: str = "") -> list[str]: ...
    async def extend(self, refs: Sequence[queue_pb2.JobRef], lease_ms: int) -> list[str]: ...


class Consumers:
    """Every Consume stream of one node: opens their sessions and counts their messages."""

    def __init__(self, dispatcher: Dispatcher, settlements: Settlements,
                 limits: validate.Limits) -> None:
        self.dispatcher = dispatcher
        self.settlements = settlements
        self.limits = limits
        self.opened = 0  # streams opened since start
        self.open = 0  # streams open now
        self.pushes = 0  # messages that carried jobs
        self.pushed_jobs = 0

    def serve(self, requests: AsyncIterator[queue_pb2.ConsumeRequest],
              ) -> AsyncIterator[queue_pb2.ConsumeResponse]:
        """The responses of one stream; ends by raising what ended it (``InvalidArgument``, …)."""
        return ConsumeSession(self).run(requests)


class ConsumeSession:
    """One Consume stream: its credits, its pusher, its settlements."""

    def __init__(self, consumers: Consumers) -> None:
        self._consumers = consumers
        self._dispatcher = consumers.dispatcher
        self._limits = consumers.limits
        self.queue = ""
        self.lease_ms = 0
        self.consumer_id = ""
        #: Jobs the consumer may still be sent (its credits less what was pushed).
        self.credits = 0
        self._out: asyncio.Queue[object] = asyncio.Queue()
        self._wake = asyncio.Event()  # credits came, jobs became ready, or the stream closes
        self._closing = False
        self._failed = False
        self._settling: set[asyncio.Task[None]] = set()

    async def run(self, requests: AsyncIterator[queue_pb2.ConsumeRequest],
                  ) -> AsyncIterator[queue_pb2.ConsumeResponse]:
        requests = aiter(requests)  # one iterator: the opening here, the rest in _read
        opening = await anext(requests, None)
        if opening is None:
            return  # closed before it opened
        if not opening.HasField("open"):
            raise InvalidArgument("open: the first message of a Consume stream must carry the "
                                  "opening (queue, lease_ms, consumer_id)")
        self.queue = validate.consume_open(opening.open, self._limits)
        self.lease_ms, self.consumer_id = opening.open.lease_ms, opening.open.consumer_id
        idle_s = opening.open.wait_ms / 1000 or None  # a heartbeat after this long
        self._take(opening)
        consumers = self._consumers
        consumers.opened += 1
        consumers.open += 1
        pusher = asyncio.ensure_future(self._push())
        reader = asyncio.ensure_future(self._read(requests, pusher))
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self._out.get(), idle_s)
                except TimeoutError:
                    yield queue_pb2.ConsumeResponse()  # still here
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, queue_pb2.ConsumeResponse)
                if item.jobs:
                    consumers.pushes += 1
                    consumers.pushed_jobs += len(item.jobs)
                yield item
        finally:
            consumers.open -= 1
            for task in (reader, pusher):
                task.cancel()  # a Lease still committing gives its jobs back (Dispatcher)
            await asyncio.gather(reader, pusher, return_exceptions=True)
            self._give_back_unsent()

    # ------------------------------------------------------------ requests

    async def _read(self, requests: AsyncIterator[queue_pb2.ConsumeRequest],
                    pusher: asyncio.Future[None]) -> None:
        try:
            async for request in requests:
                if request.HasField("open"):
                    raise InvalidArgument("open: the stream is open already; send the opening "
                                          "in the first message only")
                self._take(request)
        except Exception as exc:  # noqa: BLE001 - ends the stream with its status
            self._fail(exc)
            return
        # The consumer is done sending: finish what is under way, then end the stream.
        self._closing = True
        self._wake.set()
        await asyncio.gather(pusher, *self._settling, return_exceptions=True)
        self._out.put_nowait(_END)

    def _take(self, request: queue_pb2.ConsumeRequest) -> None:
        if request.credits:
            validate.credits(self.credits, request.credits, self._limits)
            self.credits += request.credits
            self._wake.set()
        kind = request.WhichOneof("settle")
        if kind is None:
            return
        if request.request_id == 0:
            raise InvalidArgument(f"request_id: 0 on a message with {kind}; number "
                                  "settlements from 1 so their answers can be matched")
        task = asyncio.ensure_future(self._settle(request, kind))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, request: queue_pb2.ConsumeRequest, kind: str) -> None:
        settlements = self._consumers.settlements
        body = getattr(request, kind)
        try:
            if kind == "ack":
                errors = await settlements.ack(body.jobs)
            elif kind == "nack":
                errors = await settlements.nack(body.jobs, body.delay_ms, body.error)
            else:
                errors = await settlements.extend(body.jobs, body.lease_ms)
        except InvalidArgument as exc:
            self._fail(InvalidArgument(f"{kind}.{exc}"))  # "ack.jobs[0].job_id: …"
            return
        except Exception as exc:  # noqa: BLE001 - ends the stream with its status
            self._fail(exc)
            return
        self._out.put_nowait(queue_pb2.ConsumeResponse(
            request_id=request.request_id,
            results=[queue_pb2.RefResult(job_id=ref.job_id, ok=not error, error=str(error),
                                         reason=refusal_to_pb(error))
                     for ref, error in zip(body.jobs, errors)]))

    def _fail(self, exc: Exception) -> None:
        if not self._failed:
            self._failed = True
            self._out.put_nowait(exc)

    # ---------------------------------------------------------------- pushes

    async def _push(self) -> None:
        """Lease and push while there are credits; park while there is nothing to lease.

        The first round always answers, with what was ready at once (maybe
        nothing), so the consumer knows this node's share of a backlog."""
        first = True
        try:
            while not self._closing:
                self._wake.clear()  # a wake-up from now on is not missed
                jobs: list[queue_pb2.Job] = []
                if self.credits:
                    jobs = await self._dispatcher.lease(
                        self.queue, min(self.credits, self._limits.max_dequeue_jobs),
                        self.lease_ms, self.consumer_id)
                    self.credits -= len(jobs)
                if jobs or first:
                    self._emit(jobs)
                    first = False
                if jobs:
                    continue  # more may be ready, and credits left
                if self._closing:
                    return
                if self.credits:
                    await self._dispatcher.park(self.queue, self._wake, None)
                else:
                    await self._wake.wait()
        except Exception as exc:  # noqa: BLE001 - ends the stream with its status
            self._fail(exc)

    def _emit(self, jobs: list[queue_pb2.Job]) -> None:
        if not jobs:
            self._out.put_nowait(queue_pb2.ConsumeResponse())
            return
        chunk: list[queue_pb2.Job] = []
        size = 0
        for job in jobs:
            weight = job.ByteSize()
            if chunk and size + weight > MAX_PUSH_BYTES:
                self._out.put_nowait(queue_pb2.ConsumeResponse(jobs=chunk))
                chunk, size = [], 0
            chunk.append(job)
            size += weight
        self._out.put_nowait(queue_pb2.ConsumeResponse(jobs=chunk))

    def _give_back_unsent(self) -> None:
        unsent: list[queue_pb2.Job] = []
        while not self._out.empty():
            item = self._out.get_nowait()
            if isinstance(item, queue_pb2.ConsumeResponse):
                unsent.extend(item.jobs)
        if unsent:
            log.debug("a Consume stream on %r ended with %d jobs unsent: given back",
                      self.queue, len(unsent))
            self._dispatcher.give_back(unsent)
