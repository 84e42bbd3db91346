"""The gateway's owner picking from health reports, in one event loop on a fake clock.

The monitor is fed the reports its WatchHealth streams would deliver
(``HealthMonitor.received``); no node process runs and no CPU is loaded: the
report says what the node's CPU is, as a node under load would.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from support.clock import FakeClock

from dpq.errors import Unavailable
from dpq.gateway.monitor import HealthMonitor
from dpq.gateway.owners import OwnerPicker
from dpq.v1 import replication_pb2

STALE_S = 1.5


def report(node_id: int, cpu: float = 10.0, **fields) -> replication_pb2.NodeHealthReport:
    return replication_pb2.NodeHealthReport(node_id=node_id, cpu_percent=cpu, leader_id=1,
                                            **fields)


def in_loop(test):
    """Run ``test(monitor, picker, clock)`` in a fresh loop, with three nodes."""
    async def main():
        clock = FakeClock()
        monitor = HealthMonitor(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
                                stale_s=STALE_S, clock=clock)
        try:
            test(monitor, OwnerPicker(monitor, refresh_s=0.1, clock=clock), clock)
        finally:
            await monitor.stop()  # never started: only closes the (unused) channels
    asyncio.run(main())


def shares(picker: OwnerPicker, jobs: int = 300) -> dict[int, float]:
    picked = Counter(picker.pick(jobs))
    return {n: picked[n] / jobs for n in (1, 2, 3)}


def test_a_node_reporting_high_cpu_gets_a_smaller_share():
    def test(monitor, picker, clock):
        for view, node_id in zip(monitor.nodes, (1, 2, 3), strict=True):
            monitor.received(view, report(node_id, cpu=20.0))
        even = shares(picker)
        assert all(abs(s - 1 / 3) < 0.02 for s in even.values()), even

        monitor.received(monitor.nodes[2], report(3, cpu=95.0))  # node 3 under CPU load
        clock.advance(0.1)  # the picker's refresh interval: it reads the new weights
        loaded = shares(picker)
        assert loaded[3] < 0.5 * min(loaded[1], loaded[2]), loaded
        assert loaded[3] > 0  # still reachable: it keeps getting a few

        monitor.received(monitor.nodes[2], report(3, cpu=20.0))  # the load is gone
        clock.advance(0.1)
        assert shares(picker)[3] > 0.3
    in_loop(test)


def test_weights_are_kept_until_the_refresh_interval_passes():
    def test(monitor, picker, clock):
        for view, node_id in zip(monitor.nodes, (1, 2, 3), strict=True):
            monitor.received(view, report(node_id))
        picker.pick(1)
        before = dict(picker.weights)
        monitor.received(monitor.nodes[2], report(3, cpu=95.0))
        clock.advance(0.05)
        picker.pick(1)
        assert picker.weights == before  # within refresh_s: the old weights
        clock.advance(0.06)
        picker.pick(1)
        assert picker.weights[3] < before[3]
    in_loop(test)


def test_a_node_silent_past_stale_s_gets_no_new_jobs():
    def test(monitor, picker, clock):
        for view, node_id in zip(monitor.nodes, (1, 2, 3), strict=True):
            monitor.received(view, report(node_id))
        clock.advance(STALE_S)  # exactly stale_s: still reachable
        assert [v.node_id for v in monitor.live()] == [1, 2, 3]
        monitor.received(monitor.nodes[0], report(1))
        monitor.received(monitor.nodes[1], report(2))
        clock.advance(0.01)  # node 3's report is now older than stale_s
        assert [v.node_id for v in monitor.live()] == [1, 2]
        assert shares(picker)[3] == 0
        assert picker.weights[3] == 0

        clock.advance(STALE_S + 0.01)  # nobody reported since
        assert monitor.leader() is None
        with pytest.raises(Unavailable):
            picker.pick(1)
    in_loop(test)
