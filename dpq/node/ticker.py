"""The leader's schedule ticker: proposes a ScheduleTick when a schedule falls due.

Only the leader ticks. It sleeps until the earliest ``next_fire_at_us`` of its
replica's schedules (``dpq.queue.schedules``), woken early when the schedules
change (a create, a delete, a tick applied), then proposes
``ScheduleTick(name, fire_at, version, owner)`` for every schedule due by its
clock — the same clock it stamps its proposals with, so the state machine finds
the slot's leader time at or past the tick.

It proposes only what its replica says is next, and a tick once while it is in
flight; the state machine drops any tick it has seen (a duplicate from two
leaders around a failover, a retry). So each tick enqueues exactly one job: a
new leader simply proposes the ticks its replica has not seen applied.

The job's owner is a live member, taken in turn (round-robin).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from dpq import clock as clocks
from dpq.paxos.core import Replica
from dpq.proposing.proposer import Proposer
from dpq.queue.schedules import CATCH_UP_GRACE_US, Ticked
from dpq.queue.state import QueueState
from dpq.v1 import log_pb2

log = logging.getLogger("dpq.node.ticker")

#: How often a follower looks whether it leads now (it ticks nothing meanwhile).
FOLLOWER_CHECK_S = 0.2
#: The longest the ticker sleeps without looking (a clock step, a missed wake-up).
MAX_SLEEP_S = 1.0
#: After a tick that failed or was dropped, before proposing the same tick again.
RETRY_S = 0.2


class Ticker:
    def __init__(self, node_id: int, peers: list[int], state: QueueState, replica: Replica,
                 proposer: Proposer, reachable: Callable[[int], bool], *,
                 wall_us: clocks.WallClock = clocks.wall_us) -> None:
        self._node_id = node_id
        self._peers = sorted(peers)
        self._state = state
        self._replica = replica
        self._proposer = proposer
        self._reachable = reachable
        self._wall_us = wall_us
        self._wake = asyncio.Event()
        self._seen_revision = -1
        self._leading = False
        self._turn = 0
        # (name, version, fire_at_us) proposed and not yet answered
        self._in_flight: set[tuple[str, int, int]] = set()
        self._tasks: set[asyncio.Task] = set()
        #: Ticks proposed, and those that enqueued a job (for tests and metrics).
        self.proposed = 0
        self.fired = 0

    def after_apply(self) -> None:
        """Called after every applied batch: look again if the schedules changed."""
        if self._state.schedules.revision != self._seen_revision:
            self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                delay = self.step()
                if delay > 0:
                    try:
                        await asyncio.wait_for(self._wake.wait(), delay)
                    except TimeoutError:
                        pass
        finally:
            for task in self._tasks:
                task.cancel()

    def step(self) -> float:
        """Propose the ticks due now; return how long to sleep before the next look."""
        if not self._replica.is_leader:
            if self._leading:
                log.info("schedule ticker of node %d: no longer leader, stops ticking",
                         self._node_id)
                self._leading = False
            return FOLLOWER_CHECK_S
        table = self._state.schedules
        self._seen_revision = table.revision
        now = self._wall_us()
        if not self._leading:
            self._leading = True
            earliest = table.earliest()
            log.info("schedule ticker of node %d: leading with %d schedules%s", self._node_id,
                     len(table), "" if earliest is None
                     else f", next tick in {max(0, earliest - now) / 1e6:.1f}s")
        for entry in table.due(now):
            key = (entry.name, entry.version, entry.next_fire_at_us)
            if key in self._in_flight:
                continue
            self._in_flight.add(key)
            late_us = now - entry.next_fire_at_us
            if late_us > CATCH_UP_GRACE_US:
                log.warning("schedule %r: tick due %.1fs ago (the cluster was down or "
                            "leaderless): one catch-up job, then the next tick after now",
                            entry.name, late_us / 1e6)
            task = asyncio.create_task(self._propose(key, self._owner(), late_us))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        earliest = table.earliest()
        if earliest is None or earliest <= now:  # none, or due and in flight: its answer wakes
            return MAX_SLEEP_S
        return min(MAX_SLEEP_S, (earliest - now) / 1e6)

    def _owner(self) -> int:
        live = [p for p in self._peers if p == self._node_id or self._reachable(p)]
        self._turn += 1
        return live[self._turn % len(live)] if live else self._node_id

    async def _propose(self, key: tuple[str, int, int], owner: int, late_us: int) -> None:
        name, version, fire_at = key
        command = log_pb2.Command(schedule_tick=log_pb2.ScheduleTickCommand(
            name=name, fire_at_us=fire_at, version=version, owner=owner))
        self.proposed += 1
        retry = True
        try:
            result = await self._proposer.submit(command)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the next look tries again (if still leader)
            log.warning("schedule %r: proposing the tick at %d failed (retrying): %s", name,
                        fire_at, exc)
        else:
            if isinstance(result, Ticked) and result.job_id:
                self.fired += 1
                retry = False
                log.debug("schedule %r: tick at %d enqueued job %d on node %d (%.3fs late)",
                          name, fire_at, result.job_id, owner, late_us / 1e6)
            elif isinstance(result, Ticked):
                # seen already or the schedule changed (the replica says what is next), or
                # early at another leader: looked at again after RETRY_S
                log.info("schedule %r: tick at %d dropped: %s", name, fire_at, result.dropped)
            else:
                log.warning("schedule %r: tick at %d answered %r", name, fire_at, result)
        if retry:
            await asyncio.sleep(RETRY_S)
        self._in_flight.discard(key)
        self._wake.set()

