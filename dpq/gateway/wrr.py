"""Smooth weighted round-robin in pure Python: the twin of ``dpq._wrr``.

It is the oracle the property tests hold the compiled selector against, and
the reference for the algorithm (nginx's smooth weighted round-robin):

    for every node with weight > 0:  current[node] += weight[node]
    best = the node with the largest current (first in node order on a tie)
    current[best] -= sum(weights)

``validate_weights`` is shared by both implementations so they refuse the same
input with the same message.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

# Bounds that keep every running value far from int64 overflow in the
# extension: |current| <= MAX_NODES * MAX_WEIGHT < 2**47.
MAX_WEIGHT = 1_000_000_000
MAX_NODES = 65_536


def validate_weights(
    node_ids: Iterable[int], weights: Iterable[int]
) -> tuple[list[int], list[int], int]:
    """Check a node set and its weights; return them as lists and their total."""
    ids = [int(i) for i in node_ids]
    ws = [int(w) for w in weights]
    if len(ids) != len(ws):
        raise ValueError(f"node_ids has {len(ids)} items but weights has {len(ws)}")
    if not ids:
        raise ValueError("node_ids is empty: at least one node is needed")
    if len(ids) > MAX_NODES:
        raise ValueError(f"{len(ids)} nodes is over the limit of {MAX_NODES}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"node_ids has duplicates: {sorted(ids)}")
    for node, w in zip(ids, ws):
        if not 0 <= node < 2**32:
            raise ValueError(f"node id {node} is outside 0..{2**32 - 1}")
        if not 0 <= w <= MAX_WEIGHT:
            raise ValueError(f"weight {w} of node {node} is outside 0..{MAX_WEIGHT}")
    total = sum(ws)
    if total == 0:
        raise ValueError("every weight is 0: no node could be picked")
    return ids, ws, total


class PyWRR:
    """Pick node ids in proportion to integer weights, smoothly."""

    def __init__(self, node_ids: Iterable[int] = (), weights: Iterable[int] = ()) -> None:
        self._ids: list[int] = []
        self._weights: list[int] = []
        self._current: list[int] = []
        self._total = 0
        node_ids, weights = list(node_ids), list(weights)
        if node_ids or weights:
            self.set_weights(node_ids, weights)

    def set_weights(self, node_ids: Iterable[int], weights: Iterable[int]) -> None:
        """Replace the node set and weights; refused input changes nothing."""
        ids, ws, total = validate_weights(node_ids, weights)
        previous = self.current_values()
        self._ids, self._weights, self._total = ids, ws, total
        self._current = [previous.get(i, 0) if w else 0 for i, w in zip(ids, ws)]

    def current_values(self) -> dict[int, int]:
        return dict(zip(self._ids, self._current))

    def weights(self) -> dict[int, int]:
        return dict(zip(self._ids, self._weights))

    @property
    def total_weight(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._ids)

    def pick(self) -> int:
        if not self._total:
            raise LookupError("no node to pick: set_weights() has not been called")
        current, weights = self._current, self._weights
        best = -1
        for i, w in enumerate(weights):
            if w == 0:
                continue
            current[i] += w
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= self._total
        return self._ids[best]

    def pick_many(self, n: int) -> array:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return array("I", [self.pick() for _ in range(n)])
