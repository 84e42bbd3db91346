"""Retries: exponential backoff with jitter, moving to another endpoint on failure.

Retried: ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED`` (on the next endpoint) and
``RESOURCE_EXHAUSTED`` (on the same one, after at least ``busy_backoff``).
Everything else, ``INVALID_ARGUMENT`` above all, is raised at once as the
matching :class:`~dpq.client.errors.ServerError`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from dpq import clock as clocks
from dpq.client._endpoints import Endpoints, leader_hint
from dpq.client.errors import server_error

log = logging.getLogger("dpq.client")

T = TypeVar("T")

MOVE_ON = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
RETRYABLE = MOVE_ON | {grpc.StatusCode.RESOURCE_EXHAUSTED}


def exponential(first: float, multiplier: float, cap: float, n: int) -> float:
    """``first * multiplier ** n``, at most ``cap``: the one growth curve of the
    client's delays (RPC retries here, nack delays in ``ExponentialBackoff``);
    each adds its own jitter."""
    return min(cap, first * multiplier ** min(n, 64))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a call is retried after UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED.

    The n-th retry waits a random time between half and all of
    ``min(max_backoff, initial_backoff * multiplier ** n)`` seconds ("equal
    jitter"), so clients that failed together do not retry together. A call
    gives up after ``max_attempts`` attempts or once ``deadline`` seconds have
    passed since its first one, whichever comes first.
    """

    max_attempts: int = 10
    deadline: float = 60.0
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    multiplier: float = 2.0
    busy_backoff: float = 0.5

    def backoff(self, retry: int, busy: bool = False) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first)."""
        cap = exponential(self.initial_backoff, self.multiplier, self.max_backoff, retry)
        if busy:
            cap = max(cap, self.busy_backoff)
        return cap / 2 + random.uniform(0, cap / 2)


class Retry(Exception):
    """Raised by an attempt to ask for another one (not a gRPC status).

    ``move_on`` says whether the endpoint is to blame.
    """

    def __init__(self, message: str, move_on: bool) -> None:
        super().__init__(message)
        self.move_on = move_on


@dataclass(slots=True)
class RetryCounter:
    """How many retries calls made; for ``stats``."""

    retries: int = 0


async def with_retries(endpoints: Endpoints, policy: RetryPolicy, method: str,
                       attempt: Callable[[str], Awaitable[T]],
                       counter: RetryCounter | None = None, *,
                       clock: clocks.Clock = clocks.monotonic) -> T:
    """Run ``attempt(address)`` until it returns, retrying as the policy says.

    Raises the :class:`~dpq.client.errors.ServerError` of the last failure.
    """
    started = clock()
    tries = 0
    while True:
        address = endpoints.current()
        tries += 1
        try:
            return await attempt(address)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code not in RETRYABLE:
                raise server_error(code, details, method, address) from None
            if code in MOVE_ON:
                endpoints.failed(address, leader_hint(details))
        except Retry as exc:
            code, details = grpc.StatusCode.UNAVAILABLE, str(exc)
            if exc.move_on:
                endpoints.failed(address)
        delay = policy.backoff(tries - 1, busy=code == grpc.StatusCode.RESOURCE_EXHAUSTED)
        if tries >= policy.max_attempts or clock() + delay - started > policy.deadline:
            raise server_error(code, f"{details} (gave up after {tries} attempts)", method,
                               address) from None
        log.debug("%s at %s failed with %s (%s); retry %d in %.2fs", method, address,
                  code.name, details, tries, delay)
        if counter is not None:
            counter.retries += 1
        await asyncio.sleep(delay)
