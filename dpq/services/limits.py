"""Limits every dpq server enforces at its ports, and the flags that set them.

One home for these settings (``dpq-node`` and ``dpq-gateway`` share the
flags; a node's TOML file takes the same keys):

* ``--max-request-bytes``: the largest message a client may send on the public
  port. Default: 16 MiB plus ``--max-payload-bytes``, so one job with the
  largest payload always fits beside a batch of small ones. gRPC refuses
  anything larger with ``RESOURCE_EXHAUSTED`` before it is read whole.
* ``--max-peer-message-bytes``: the same for the replication plane, where a
  Promise's snapshot travels whole (512 MiB; an InstallSnapshot goes in pieces).
* ``--health-min-interval-ms``: the shortest ``WatchHealth`` interval a caller
  may ask for (50). Below it the call is refused with ``INVALID_ARGUMENT``
  naming ``interval_ms``, the value and the floor, rather than clamped: a
  monitor that asks for 1 ms should learn it does not get it. 0 still means the
  node's default (250 ms).
* ``--max-health-watchers``: ``WatchHealth`` streams open at once on a node (64);
  one more is refused with ``RESOURCE_EXHAUSTED``. Gateways hold one each.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import grpc

from dpq.queue.validate import DEFAULT_MAX_PAYLOAD_BYTES

MIB = 1 << 20
#: Room for the rest of a request beside the largest payload.
REQUEST_HEADROOM_BYTES = 16 * MIB
DEFAULT_MAX_PEER_MESSAGE_BYTES = 512 * MIB
DEFAULT_HEALTH_MIN_INTERVAL_MS = 50
DEFAULT_MAX_HEALTH_WATCHERS = 64
#: Services of the replication plane; everything else is public.
PEER_SERVICES = ("dpq.v1.Replication",)
WATCH_HEALTH = "/dpq.v1.Replication/WatchHealth"


class LimitError(ValueError):
    """Settings that contradict each other; the message names the flags."""


def default_request_bytes(max_payload_bytes: int) -> int:
    return REQUEST_HEADROOM_BYTES + max_payload_bytes


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_request_bytes: int = default_request_bytes(DEFAULT_MAX_PAYLOAD_BYTES)
    max_peer_message_bytes: int = DEFAULT_MAX_PEER_MESSAGE_BYTES
    health_min_interval_ms: int = DEFAULT_HEALTH_MIN_INTERVAL_MS
    max_health_watchers: int = DEFAULT_MAX_HEALTH_WATCHERS

    def limit_for(self, method: str) -> tuple[int, str]:
        """The size limit of ``method``'s requests and the flag that sets it."""
        if method.lstrip("/").startswith(tuple(s + "/" for s in PEER_SERVICES)):
            return self.max_peer_message_bytes, "--max-peer-message-bytes"
        return self.max_request_bytes, "--max-request-bytes"

    def receive_cap(self, services: list[str]) -> int:
        """gRPC's own cap for a server of ``services``: the largest of their limits."""
        if any(s in PEER_SERVICES for s in services):
            return max(self.max_request_bytes, self.max_peer_message_bytes)
        return self.max_request_bytes


DEFAULT_LIMITS = ServerLimits()


def add_arguments(parser: argparse.ArgumentParser, *, peer: bool = True) -> None:
    """The flags, with ``None`` defaults (so a node's TOML file can set them too)."""
    parser.add_argument(
        "--max-request-bytes", type=int,
        help="largest gRPC message a client may send (default: 16 MiB + --max-payload-bytes); "
             "larger ones are refused with RESOURCE_EXHAUSTED")
    if peer:
        parser.add_argument(
            "--max-peer-message-bytes", type=int,
            help="largest message on the replication plane, where a Promise's snapshot "
                 "travels whole "
                 f"({DEFAULT_MAX_PEER_MESSAGE_BYTES >> 20} MiB)")
        parser.add_argument(
            "--health-min-interval-ms", type=int,
            help="shortest WatchHealth interval a caller may ask for; shorter ones are refused "
                 f"with INVALID_ARGUMENT ({DEFAULT_HEALTH_MIN_INTERVAL_MS})")
        parser.add_argument(
            "--max-health-watchers", type=int,
            help="WatchHealth streams open at once; more are refused with RESOURCE_EXHAUSTED "
                 f"({DEFAULT_MAX_HEALTH_WATCHERS})")


def from_values(values: dict[str, Any], max_payload_bytes: int) -> ServerLimits:
    """Pop this module's keys from ``values`` (flags or TOML) and check them."""
    request = values.pop("max_request_bytes", None)
    smallest = max_payload_bytes + 64 * 1024  # one job: payload, names, framing
    if request is None:
        request = default_request_bytes(max_payload_bytes)
    elif request < smallest:
        raise LimitError(
            f"--max-request-bytes {request} cannot carry one job with the largest payload "
            f"(--max-payload-bytes {max_payload_bytes}); use at least {smallest}")
    limits = ServerLimits(
        max_request_bytes=request,
        max_peer_message_bytes=values.pop("max_peer_message_bytes", None)
        or DEFAULT_MAX_PEER_MESSAGE_BYTES,
        health_min_interval_ms=_pop(values, "health_min_interval_ms",
                                    DEFAULT_HEALTH_MIN_INTERVAL_MS),
        max_health_watchers=_pop(values, "max_health_watchers", DEFAULT_MAX_HEALTH_WATCHERS),
    )
    if limits.max_peer_message_bytes < request:
        raise LimitError(f"--max-peer-message-bytes {limits.max_peer_message_bytes} is below "
                         f"--max-request-bytes {request}: forwarded batches would not fit")
    if limits.max_health_watchers < 1:
        raise LimitError(f"--max-health-watchers {limits.max_health_watchers}: at least 1")
    return limits


def _pop(values: dict[str, Any], key: str, default: int) -> int:
    value = values.pop(key, None)
    return default if value is None else value


class HealthWatchLimiter(grpc.aio.ServerInterceptor):
    """The ``WatchHealth`` interval floor and the cap on streams open at once.

    Runs after :class:`dpq.services.decoding.DecodingInterceptor`, so the
    request it sees has parsed."""

    def __init__(self, limits: ServerLimits) -> None:
        self._floor_ms = limits.health_min_interval_ms
        self._max = limits.max_health_watchers
        self.open = 0

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method != WATCH_HEALTH or not handler.unary_stream:
            return handler
        inner = handler.unary_stream

        async def watch(request, context):
            if 0 < request.interval_ms < self._floor_ms:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"interval_ms: {request.interval_ms} ms is below the floor of "
                    f"{self._floor_ms} ms (0 asks for the node's default)")
            if self.open >= self._max:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"WatchHealth: {self.open} streams are open, the limit of this node "
                    f"(--max-health-watchers {self._max}); retry later")
            self.open += 1
            try:
                async for response in inner(request, context):
                    yield response
            finally:
                self.open -= 1

        return handler._replace(unary_stream=watch)
