"""What went through the queues since this process started: counts for metrics and rates.

Derived on every replica as it applies the log (so every caught-up node has
the same counts of the cluster's traffic; a restart starts them over, and a
replica that catches up by snapshot misses what the snapshot covered). Not
replicated, not in snapshots; :class:`QueueState` keeps one :class:`Totals`
across snapshot loads, so the counts only grow.

Per queue: enqueued, delivered (leases granted) and acked jobs by priority, and
nacks, expired leases, deaths and cancellations. Bounded: the first
``MAX_TRACKED_QUEUES`` queue names get counts of their own (and keep them after
the queue empties); traffic of any further queue is counted under
``OTHER_QUEUE`` (``"(other)"``, which no queue can be named: parentheses are
not allowed in queue names). Plus one histogram per priority of the wait from
ready to first delivery (the lease that makes ``attempt`` 1), in fixed buckets.

Cost on the apply path: a dict lookup and an integer increment per job and
event; a ``bisect`` more per first delivery.
"""

from __future__ import annotations

from dpq.buckets import Buckets
from dpq.queue.rules import PRIORITY_MAX

#: Queues with counts of their own; the rest share ``OTHER_QUEUE``.
MAX_TRACKED_QUEUES = 1000
OTHER_QUEUE = "(other)"
#: Upper bounds (µs, inclusive) of the first-delivery wait buckets; one more for +Inf.
WAIT_BUCKETS_US = tuple(int(s * 1e6) for s in (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))


class QueueTotals:
    """Counts of one queue; the lists are by priority (index 0 = priority 1)."""

    __slots__ = ("acked", "cancelled", "delivered", "died", "enqueued", "expired", "nacked")

    def __init__(self) -> None:
        self.enqueued = [0] * PRIORITY_MAX
        self.delivered = [0] * PRIORITY_MAX  # leases granted
        self.acked = [0] * PRIORITY_MAX
        self.nacked = 0  # consumers' nacks (not the give-backs of undelivered leases)
        self.expired = 0  # leases that ran out
        self.died = 0  # jobs that went DEAD
        self.cancelled = 0  # jobs that became CANCELLED


class Totals:
    """Per-queue :class:`QueueTotals` (bounded, see the module docstring) and, per
    priority (index 0 = priority 1), the waits from ready to first delivery in µs."""

    __slots__ = ("first_wait", "queues")

    def __init__(self) -> None:
        self.queues: dict[str, QueueTotals] = {}
        self.first_wait = [Buckets(WAIT_BUCKETS_US) for _ in range(PRIORITY_MAX)]

    def of(self, queue: str) -> QueueTotals:
        totals = self.queues.get(queue)
        if totals is None:
            if len(self.queues) >= MAX_TRACKED_QUEUES:
                queue = OTHER_QUEUE
                totals = self.queues.get(queue)
            if totals is None:
                totals = self.queues[queue] = QueueTotals()
        return totals

    def get(self, queue: str) -> QueueTotals | None:
        """The counts of ``queue`` if it has its own (without creating them)."""
        return self.queues.get(queue)
