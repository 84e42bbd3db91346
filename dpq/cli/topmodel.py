"""The pure part of ``dpq top``: two samples of ClusterInfo + Stats become the rows
of one frame, with rates and sparklines. No I/O, no clock (times come in the
samples); ``dpq.cli.top`` polls and draws.

Rates are differences of the QueueStats counters (``enqueued_by_priority``,
``delivered_by_priority``, ``acked_by_priority``: counts since the answering node
started) over the time between two samples. A counter that went down (the
answering node restarted, or another node answered) gives no rate for that
refresh, shown as "-" and as a gap in the sparkline.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dpq.v1 import queue_pb2

PRIORITIES = 5
#: Refreshes a sparkline covers (one a second: about a minute).
SPARK_WIDTH = 60
#: Sparkline characters, lowest to highest; a space is "nothing" or "unknown".
BLOCKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Sample:
    """What one refresh read; ``at`` in seconds (monotonic), ``error`` when it failed."""

    at: float
    info: queue_pb2.ClusterInfoResponse | None = None
    queues: Sequence[queue_pb2.QueueStats] = ()
    error: str = ""


@dataclass(frozen=True)
class NodeRow:
    node_id: int
    address: str
    role: str  # "leader", "follower", "candidate", with " (learner)" for a learner
    reachable: bool
    serving: bool | None  # its gRPC health says SERVING; None: unknown (a gateway knows all)
    cpu_percent: float | None  # None: unknown (only a gateway knows every node's)
    weight: int | None
    ready: int | None
    applied: int
    lag: int  # committed slots the node has not applied (the leader's commit - its applied)


@dataclass(frozen=True)
class QueueRow:
    queue: str
    priority: int
    ready: int
    oldest_age_ms: int
    enqueue_rate: float | None  # jobs/s; None: not known yet (first sample, reset)
    delivery_rate: float | None
    ack_rate: float | None
    spark: str  # deliveries per refresh, the last SPARK_WIDTH refreshes
    paused: bool


@dataclass(frozen=True)
class Frame:
    target: str
    leader_id: int  # 0: none elected
    served_by: str
    fingerprint: str
    nodes: tuple[NodeRow, ...]
    queues: tuple[QueueRow, ...]
    error: str  # the cluster could not be reached ("" when it could)
    delayed: int = 0
    leased: int = 0
    dead: int = 0

    @property
    def leader(self) -> NodeRow | None:
        return next((n for n in self.nodes if n.node_id == self.leader_id), None)


@dataclass
class History:
    """Deliveries per second of each (queue, priority), the last ``width`` refreshes."""

    width: int = SPARK_WIDTH
    series: dict[tuple[str, int], deque[float | None]] = field(default_factory=dict)

    def add(self, key: tuple[str, int], value: float | None) -> list[float | None]:
        values = self.series.get(key)
        if values is None:
            values = self.series[key] = deque(maxlen=self.width)
        values.append(value)
        return list(values)


def sparkline(values: Iterable[float | None]) -> str:
    """One character per value, scaled to the largest: `` `` for none (0 or unknown),
    ``▁`` … ``█`` for the rest."""
    values = list(values)
    top = max((v for v in values if v), default=0.0)
    out = []
    for v in values:
        if not v or v <= 0 or top <= 0:
            out.append(" ")
        else:
            # eighths of the largest, rounded up: the smallest rate still shows
            out.append(BLOCKS[max(0, min(len(BLOCKS), math.ceil(v / top * len(BLOCKS))) - 1)])
    return "".join(out)


def rate(before: int | None, after: int, seconds: float) -> float | None:
    """Per second between two readings of a counter; None when unknown (no earlier
    reading, no time passed, or the counter went down: another start)."""
    if before is None or seconds <= 0 or after < before:
        return None
    return (after - before) / seconds


def _at(values: Sequence[int], priority: int) -> int:
    return values[priority - 1] if len(values) >= priority else 0


def node_rows(info: queue_pb2.ClusterInfoResponse) -> tuple[NodeRow, ...]:
    by_gateway = info.served_by == "gateway"
    leader = next((n for n in info.nodes if n.node_id == info.leader_id), None)
    head = leader.commit_index if leader is not None else max(
        (n.commit_index for n in info.nodes), default=0)
    rows = []
    for n in sorted(info.nodes, key=lambda n: n.node_id):
        rows.append(NodeRow(
            node_id=n.node_id, address=n.address or "?",
            role=f"{n.role} (learner)" if n.learner else n.role, reachable=n.reachable,
            serving=n.serving if by_gateway or n.node_id == info.node_id else None,
            cpu_percent=n.cpu_percent if by_gateway else None,
            weight=n.balancer_weight if by_gateway else None,
            ready=n.ready_depth if by_gateway else None,
            applied=n.applied_index, lag=max(0, head - n.applied_index)))
    return tuple(rows)


def queue_rows(before: Sample | None, now: Sample, history: History) -> tuple[QueueRow, ...]:
    """One row per queue and priority that holds or moved anything (a queue that holds
    nothing at all keeps one row, of its most urgent priority)."""
    seconds = now.at - before.at if before is not None else 0.0
    earlier = {q.queue: q for q in (before.queues if before is not None else ())}
    rows = []
    for q in sorted(now.queues, key=lambda q: q.queue):
        old = earlier.get(q.queue)
        queue_rows_: list[QueueRow] = []
        for p in range(1, PRIORITIES + 1):
            counters = [(_at(q.enqueued_by_priority, p), _at(old.enqueued_by_priority, p)
                         if old is not None else None),
                        (_at(q.delivered_by_priority, p), _at(old.delivered_by_priority, p)
                         if old is not None else None),
                        (_at(q.acked_by_priority, p), _at(old.acked_by_priority, p)
                         if old is not None else None)]
            enq, out, acked = (rate(b, a, seconds) for a, b in counters)
            spark = sparkline(history.add((q.queue, p), out))
            ready = _at(q.ready_by_priority, p)
            if ready or any(a for a, _ in counters) or enq or out:
                queue_rows_.append(QueueRow(
                    queue=q.queue, priority=p, ready=ready,
                    oldest_age_ms=_at(q.oldest_ready_age_ms, p), enqueue_rate=enq,
                    delivery_rate=out, ack_rate=acked, spark=spark, paused=q.paused))
        if not queue_rows_:
            spark = sparkline(history.series.get((q.queue, 1), ()))
            queue_rows_.append(QueueRow(q.queue, 1, 0, 0, None, None, None, spark, q.paused))
        rows.extend(queue_rows_)
    return tuple(rows)


def frame(target: str, before: Sample | None, now: Sample, history: History) -> Frame:
    """The frame for sample ``now`` (``before``: the previous one that succeeded)."""
    if now.info is None:
        return Frame(target=target, leader_id=0, served_by="", fingerprint="", nodes=(),
                     queues=(), error=now.error or "no answer")
    info = now.info
    return Frame(target=target, leader_id=info.leader_id, served_by=info.served_by,
                 fingerprint=info.cluster_fingerprint, nodes=node_rows(info),
                 queues=queue_rows(before, now, history), error=now.error,
                 delayed=sum(q.delayed for q in now.queues),
                 leased=sum(q.leased for q in now.queues),
                 dead=sum(q.dead for q in now.queues))


def age(ms: int) -> str:
    """``850ms``, ``12.5s``, ``4m05s``, ``2h10m``: how long the oldest job waited."""
    if ms < 1000:
        return f"{ms}ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def per_second(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"
