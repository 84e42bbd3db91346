"""When the next batch may leave: batching that follows the load.

Every hop of dpq (a client's coalescer, a proposer, the consumer streams)
sends batches, and each batch costs a Python process a fixed amount of CPU
(~0.2–0.4 ms per gRPC message, a Paxos round, an fsync) whatever it carries.
Sending whenever something is pending makes the batch rate follow the round
trip, not the work: a cluster at 100 jobs/s then spends as much as one at
1,000 jobs/s. So a batch may leave only ``gap`` after the previous one, and the
gap grows with how often batches have been leaving lately:

    gap = min(max_gap, rate × gap_per_rate)

``rate`` is the batches per second of the last ``window_s`` or so (an
exponentially decaying count). An idle path has rate ≈ 0, so a lone item goes
at once; a busy one settles where ``rate = 1 / gap``, i.e. at about
``1 / sqrt(gap_per_rate)`` batches per second (100/s for 1e-4 s²), with items
gathering between them. Batches that fill up (by size) leave regardless: the
caller checks that.

The callers wait only while a batch of theirs is in flight: with nothing in
flight, what is pending is all there is to send (the next items often wait on
this batch's answer: a consumer's next lease on its ack), so waiting would
only add latency. Measured on the 2-core machine, a gap kept also with nothing
in flight (5 ms at most) cost a closed loop (consume + ack) about a quarter of
its rate and bought no fewer messages per job at 1,000 jobs/s.

Pure: the caller passes the time (seconds, any monotonic origin).
"""

from __future__ import annotations

import math

#: Seconds of gap per batch-per-second of rate: a busy path settles near 100 batches/s.
DEFAULT_GAP_PER_RATE_S = 1e-4
#: The longest a batch waits for company, whatever the rate.
DEFAULT_MAX_GAP_S = 0.002
#: How far back the rate looks (the decay's time constant).
DEFAULT_WINDOW_S = 0.5


class Cadence:
    def __init__(self, *, gap_per_rate_s: float = DEFAULT_GAP_PER_RATE_S,
                 max_gap_s: float = DEFAULT_MAX_GAP_S,
                 window_s: float = DEFAULT_WINDOW_S) -> None:
        if gap_per_rate_s < 0 or max_gap_s < 0 or window_s <= 0:
            raise ValueError("gap_per_rate_s and max_gap_s must be ≥ 0, window_s > 0")
        self.gap_per_rate_s = gap_per_rate_s
        self.max_gap_s = max_gap_s
        self.window_s = window_s
        self._count = 0.0  # batches, decayed to the time of the last one
        self._last: float | None = None

    def rate(self, now: float) -> float:
        """Batches per second lately (0 before the first)."""
        if self._last is None:
            return 0.0
        return self._count * math.exp(-(now - self._last) / self.window_s) / self.window_s

    def gap(self, now: float) -> float:
        """The spacing batches keep at the current rate."""
        return min(self.max_gap_s, self.rate(now) * self.gap_per_rate_s)

    def delay(self, now: float) -> float:
        """How long the next batch should wait before leaving (0: go now)."""
        if self._last is None:
            return 0.0
        return max(0.0, self._last + self.gap(now) - now)

    def sent(self, now: float) -> None:
        """A batch left at ``now``."""
        if self._last is not None:
            self._count *= math.exp(-(now - self._last) / self.window_s)
        self._count += 1.0
        self._last = now
