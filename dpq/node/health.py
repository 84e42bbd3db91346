"""A node's live health, as the gateway's balancer wants it (DESIGN.md, "_wrr").

* CPU: the busy share of the CPUs this process may run on (its affinity set),
  from ``psutil.cpu_times(percpu=True)`` deltas. On a host of its own that is
  the host's CPU; nodes pinned to different cores of one machine each see
  their own cores.
* ready depth: ready jobs this node owns, over all queues;
* consume rate: jobs handed to consumers per second, smoothed (EWMA);
* waiting consumers: long-polls parked on the node now.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import psutil

from dpq import clock as clocks
from dpq.node.dispatcher import Dispatcher
from dpq.paxos.core import Replica
from dpq.queue.owned import OwnedJobs
from dpq.v1 import replication_pb2

RATE_HALF_LIFE_S = 2.0


class Progress(NamedTuple):
    """How a node's snapshots and event loop are doing (ClusterInfo, health reports)."""

    max_loop_stall_ms: float = 0.0  # the longest the loop was blocked since start
    snapshot_slot: int = 0  # the node's last saved snapshot: where its log starts
    snapshots_installed: int = 0  # snapshots received from a leader and loaded
    serving: bool = False  # its gRPC health says SERVING (dpq.node.readiness)


class CpuMeter:
    """Busy share of a set of CPUs between two calls of :meth:`sample`."""

    def __init__(self, cpus: list[int] | None = None) -> None:
        self.cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
        self._last = self._times()

    def _times(self) -> tuple[float, float]:
        per_cpu = psutil.cpu_times(percpu=True)
        busy = total = 0.0
        for i in self.cpus:
            t = per_cpu[i]
            idle = t.idle + getattr(t, "iowait", 0.0)
            all_ = sum(t)
            busy += all_ - idle
            total += all_
        return busy, total

    def sample(self) -> float:
        busy, total = self._times()
        d_busy, d_total = busy - self._last[0], total - self._last[1]
        self._last = (busy, total)
        return 100.0 * d_busy / d_total if d_total > 0 else 0.0


class HealthReporter:
    def __init__(self, node_id: int, replica: Replica, owned: OwnedJobs, dispatcher: Dispatcher,
                 applied_index, counters,
                 progress: Callable[[], Progress] = Progress, *,
                 clock: clocks.Clock = clocks.monotonic,
                 wall_us: clocks.WallClock = clocks.wall_us) -> None:
        self.node_id = node_id
        self._clock = clock
        self._wall_us = wall_us
        self._replica = replica
        self._owned = owned
        self._dispatcher = dispatcher
        self._applied_index = applied_index
        self._counters = counters  # () -> dict[str, float]
        self._progress = progress
        self._cpu = CpuMeter()
        self._cpu_percent = 0.0
        self._rate = 0.0
        self._last_delivered = dispatcher.delivered
        self._last_t = clock()

    def sample(self) -> None:
        """Refresh CPU and consume rate (called on a timer)."""
        now = self._clock()
        dt = now - self._last_t
        if dt <= 0:
            return
        self._cpu_percent = self._cpu.sample()
        delivered = self._dispatcher.delivered
        instant = (delivered - self._last_delivered) / dt
        weight = 0.5 ** (dt / RATE_HALF_LIFE_S)
        self._rate = weight * self._rate + (1 - weight) * instant
        self._last_delivered, self._last_t = delivered, now

    @property
    def consume_rate(self) -> float:
        """Jobs handed to consumers per second, smoothed (half-life RATE_HALF_LIFE_S)."""
        return self._rate

    def report(self) -> replication_pb2.NodeHealthReport:
        status = self._replica.status()
        return replication_pb2.NodeHealthReport(
            node_id=self.node_id, cpu_percent=self._cpu_percent,
            ready_depth=self._owned.depth(self._wall_us()), consume_rate=self._rate,
            waiting_consumers=self._dispatcher.waiting, role=status.role.value,
            leader_id=status.leader_hint or 0, commit_index=status.commit,
            applied_index=self._applied_index(), ballot=str(status.promised),
            counters=self._counters(), learner=status.learner, **self._progress()._asdict())
