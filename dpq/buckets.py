"""Counts of observed values in fixed buckets: a histogram kept with one ``bisect`` and two
additions per value, exported as a Prometheus histogram only when scraped.

Pure (no clock, no I/O), so the state machine and the drivers can observe into one on
their hot paths and nothing else is paid until someone looks.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable


class Buckets:
    """``counts[i]``: values ``<= bounds[i]`` (and above ``bounds[i - 1]``); the last
    count is for values above every bound. ``total``: the sum of the values."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(bounds)
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"bucket bounds must increase: {self.bounds}")
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self, per: float = 1) -> list[tuple[str, int]]:
        """``(le, count of values <= le)`` per bound and ``+Inf``, bounds divided by ``per``
        (e.g. 1e6 for microseconds to seconds): Prometheus's form."""
        out, running = [], 0
        for bound, n in zip(self.bounds, self.counts):
            running += n
            out.append((_float(bound / per), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def _float(value: float) -> str:
    return repr(float(f"{value:.9g}"))
