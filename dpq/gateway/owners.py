"""Who serves each new job: smooth weighted round-robin over live health.

Weights come from ``dpq.gateway.balancer`` fed by the nodes' health reports, refreshed
every ``refresh_s`` and at once when a node's stream breaks; the picks come
from the compiled ``dpq._wrr`` selector, one call per request.
"""

from __future__ import annotations

from collections import Counter

from dpq import clock as clocks
from dpq._wrr import SmoothWRR
from dpq.errors import Unavailable
from dpq.gateway import balancer
from dpq.gateway.monitor import HealthMonitor


class OwnerPicker:
    def __init__(self, monitor: HealthMonitor, refresh_s: float = 0.1,
                 clock: clocks.Clock = clocks.monotonic) -> None:
        self._monitor = monitor
        self._refresh_s = refresh_s
        self._clock = clock
        self._wrr = SmoothWRR()
        self._at = 0.0
        self._version = -1
        self.weights: dict[int, int] = {}
        self.assigned: Counter[int] = Counter()  # jobs given to each node

    def pick(self, n: int) -> list[int]:
        now = self._clock()
        if (now - self._at >= self._refresh_s or not self.weights
                or self._monitor.version != self._version):
            self._at, self._version = now, self._monitor.version
            ids, ws = balancer.weights(self._monitor.health())
            if not any(ws):
                raise Unavailable("no node is reachable to own new jobs", None)
            if dict(zip(ids, ws)) != self.weights:
                self._wrr.set_weights(ids, ws)
                self.weights = dict(zip(ids, ws))
        owners = list(self._wrr.pick_many(n))
        self.assigned.update(owners)
        return owners
