"""Percentiles of latency samples, in milliseconds.

Nearest-rank percentiles on the whole sample (no histogram, no interpolation):
the p99 of 1,000 samples is the 990th smallest. ``n`` is reported beside every
summary, so a p999 over fewer than 1,000 samples reads as what it is (the max).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p999": 0.999}


def summarize_ns(samples_ns: Iterable[int]) -> dict[str, float | int | None]:
    """``{"n", "p50", "p90", "p99", "p999", "max", "min", "mean"}``; times in ms (None when
    empty)."""
    values = sorted(samples_ns)
    n = len(values)
    out: dict[str, float | int | None] = {"n": n}
    if not n:
        out.update({k: None for k in (*QUANTILES, "min", "max", "mean")})
        return out
    for name, q in QUANTILES.items():
        out[name] = values[max(0, math.ceil(q * n) - 1)] / 1e6
    out["min"] = values[0] / 1e6
    out["max"] = values[-1] / 1e6
    out["mean"] = sum(values) / n / 1e6
    return out


def rate(count: int, seconds: float) -> float | None:
    """``count / seconds``, or None for an empty interval."""
    return count / seconds if seconds > 0 else None


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` when both are known and ``b`` is not 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b
