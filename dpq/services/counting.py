"""How many gRPC messages a server takes in and sends out, per method.

Every gRPC message costs a Python process a fixed ~0.1–0.4 ms of CPU (the
grpc.aio poller thread, the event loop hand-off, protobuf), whatever it
carries, so at moderate load the number of messages, not the number of jobs,
sets what a node spends. The benchmark divides these counts by the jobs of a
phase to report messages per job at every hop.

Counting happens in the handler's own (de)serializers: once per message of a
unary call or a stream, without another layer of coroutines per call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

import grpc


class MessageCounter(grpc.aio.ServerInterceptor):
    """``received`` / ``sent``: messages per method, keyed ``Service/Method``
    (``Queue/Dequeue``, ``Replication/Stream``)."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()

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

        return handler._replace(request_deserializer=counted_decode,
                                response_serializer=counted_encode)
