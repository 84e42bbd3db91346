"""How many gRPC messages a server takes in and sends out, per method.

Every gRPC message costs a Python process a fixed ~0.1–0.4 ms of CPU (the
grpc.aio poller thread, the event loop hand-off, protobuf), whatever it
carries, so at moderate load the number of messages, not the number of jobs,
sets what a node spends. The benchmark divides these counts by the jobs of a
phase to report messages per job at every hop.

Counting happens in the handler's own (de)serializers: once per message of a
unary call or a stream, without another layer of coroutines per call.

Calls with a single response (unary, and client streams) are also counted by
the status code they end with (:attr:`MessageCounter.codes`, for the
``dpq_grpc_requests_total`` metric): that takes one wrapping coroutine per call,
about a microsecond against the few hundred a call costs. Calls that stream
responses (Consume, EnqueueStream, the peers' streams) are counted by their
messages only: wrapping them would add a step to every message they send.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc


class MessageCounter(grpc.aio.ServerInterceptor):
    """``received`` / ``sent``: messages per method, keyed ``Service/Method``
    (``Queue/Dequeue``, ``Replication/Stream``); ``codes``: finished calls with one
    response, keyed ``(Service/Method, code name)`` (``("Queue/Ack", "OK")``)."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.codes: Counter[tuple[str, str]] = Counter()

    def totals(self, prefix: str = "rpc") -> dict[str, float]:
        """``{prefix}.in.Service/Method`` and ``{prefix}.out.Service/Method`` running totals."""
        totals = {f"{prefix}.in.{m}": float(n) for m, n in self.received.items()}
        totals.update({f"{prefix}.out.{m}": float(n) for m, n in self.sent.items()})
        return totals

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        # "/dpq.v1.Queue/Dequeue" -> "Queue/Dequeue"
        service, _, method = details.method.rpartition("/")
        name = f"{service.rpartition('.')[2]}/{method}"
        received, sent = self.received, self.sent
        decode, encode = handler.request_deserializer, handler.response_serializer

        def counted_decode(raw: bytes):
            received[name] += 1
            return decode(raw) if decode is not None else raw

        def counted_encode(message):
            sent[name] += 1
            return encode(message) if encode is not None else message

        handler = handler._replace(request_deserializer=counted_decode,
                                   response_serializer=counted_encode)
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._coded(name, handler.unary_unary))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._coded(name, handler.stream_unary))
        return handler

    def _coded(self, name: str, behavior):
        if not inspect.iscoroutinefunction(behavior):
            return behavior  # a synchronous handler (dpq has none): left alone
        codes = self.codes

        async def coded(request, context):
            try:
                response = await behavior(request, context)
            except asyncio.CancelledError:
                codes[(name, "CANCELLED")] += 1
                raise
            except BaseException:
                code = context.code()  # set by an abort; else the call ends UNKNOWN
                codes[(name, code.name if code is not None else "UNKNOWN")] += 1
                raise
            code = context.code()
            codes[(name, code.name if code is not None else "OK")] += 1
            return response

        return coded
