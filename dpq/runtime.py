"""How every dpq process (node, gateway, bench worker) runs asyncio: uvloop, a quieter collector.

**uvloop.** grpc.aio hands every completed operation from its own threads to
the loop through a wake-up socket, and every hop of dpq (client → gateway →
leader → followers) is such a round trip. On uvloop one stream round trip on
loopback costs 12 % less CPU and goes 11 % faster (unary calls: 6 % less CPU),
medians of ``python bench/bench_loop.py`` on the 2-core CI machine kind. So
the servers, the CLI and the benchmark's workers run on it. The client
library does not choose a loop for its users.

**The collector.** A node holds every job of its queue state as long-lived
Python objects, and makes and drops many small ones per request (protobuf
messages, futures). With CPython's defaults (a young collection every 700
allocations) the collector runs thousands of times a second under load and
keeps re-walking the old generation as the state grows. The servers make no
reference cycles on their hot paths, so fewer, larger young collections cost
less; objects alive after start-up are frozen out of collection altogether.
"""

from __future__ import annotations

import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")

#: Young-generation threshold: allocations minus deallocations between collections.
YOUNG_THRESHOLD = 50_000


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a uvloop loop."""
    return uvloop.run(main)


def tune_for_server() -> None:
    """Call once the server is up: freeze what start-up built, collect less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
