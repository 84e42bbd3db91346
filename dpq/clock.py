"""The clock every timed part outside the pure core reads, passed in so tests can move it.

A :data:`Clock` is a function returning monotonic seconds, as
``time.monotonic`` (River's ``TestConfig.Time`` is the model). Components take
one as a keyword argument defaulting to :data:`monotonic`; a test passes
``support.clock.FakeClock`` and advances it instead of sleeping. Components
still *wait* with ``asyncio.sleep``/``wait_for``: the clock decides what is
due, the loop only decides how often to look.

Job times (ready_at, lease deadlines) are wall-clock microseconds, because the
leader stamps them into commands every replica applies: a :data:`WallClock`
(default :data:`wall_us`) is passed in the same way wherever a part compares
them with now (lease expiry, due jobs).

The core (``dpq.paxos``, ``dpq.queue``) reads no clock at all: times come in
the commands, stamped by the leader.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Monotonic seconds, as ``time.monotonic``.
Clock = Callable[[], float]

#: The real clock: the default of every component that takes one.
monotonic: Clock = time.monotonic

#: Wall-clock microseconds since the epoch, as job times are kept.
WallClock = Callable[[], int]


def wall_us() -> int:
    return time.time_ns() // 1000
