"""Several runs of the benchmark as one: the median of every figure.

The targets are stated as medians of three runs on a noisy shared machine.
Each figure (a rate, a percentile, a CPU cost) is the median of that figure
over the runs, taken on its own: the merged result is no single run, and a
p99 beside a p50 may come from different runs. Figures that count things
(jobs checked, duplicates, errors) are not medians but the worst run's, so
a fault in one run is never voted away by two clean ones.
"""

from __future__ import annotations

import statistics
from typing import Any

#: Keys whose value says something went wrong: the merged result keeps the largest.
WORST_OF = frozenset({
    "missing", "unexpected", "duplicate_deliveries", "redeliveries", "ack_errors",
    "enqueue_errors", "pg_rows_after_drain", "errors", "ballot_changed",
})


def merge(results: list[Any]) -> Any:
    """Leaf by leaf: numbers → median (``WORST_OF`` keys → max); dicts → merged
    key by key; anything else (text, lists of samples) → the first run's."""
    first = results[0]
    if isinstance(first, dict):
        return {key: _merge_key(key, [r[key] for r in results if isinstance(r, dict) and key in r])
                for key in first}
    return first


def _merge_key(key: str, values: list[Any]) -> Any:
    if all(isinstance(v, bool) for v in values):
        return any(values) if key in WORST_OF else values[0]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return max(values) if key in WORST_OF else statistics.median(values)
    if isinstance(values[0], dict):
        return merge(values)
    return values[0]
