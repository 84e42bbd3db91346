"""The node's own snapshots, taken without holding the event loop.

A snapshot is due every ``every_slots`` applied slots, or sooner when the log
kept in memory since the last one passes its share of the memory budget. It is
taken in four parts, none of which holds the loop for long:

1. :class:`dpq.queue.snapshot.Dump` writes the state a step of ``STEP_JOBS``
   jobs at a time, yielding to the loop between steps. Commands keep being
   applied meanwhile; the state keeps the original of every job they change
   (copy-on-write), so the snapshot is the state at one slot.
2. The steps' chunks are joined in a thread (``bytes.join`` of big parts
   copies without the GIL).
3. The driver writes and fsyncs the file in a thread, then, in its own turn,
   renames it into place and drops the log it covers
   (:meth:`dpq.node.driver.ReplicaDriver.compact`).

One snapshot at a time. A snapshot installed from the leader meanwhile
abandons the one being written (the state it was reading is gone).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from dpq.node.applier import Applier
from dpq.node.driver import ReplicaDriver
from dpq.paxos.types import Snapshot
from dpq.queue import snapshot as snapshots
from dpq.queue.state import QueueState

log = logging.getLogger("dpq.node.snapshots")

#: Jobs written per step: about 1.2 µs a job on the 2-core CI machine, so a step
#: holds the loop for ~2.5 ms.
STEP_JOBS = 2_000


class Snapshotter:
    def __init__(self, state: QueueState, driver: ReplicaDriver, applier: Applier, *,
                 every_slots: int, log_bytes_limit: int, saved_slot: int,
                 on_done: Callable[[asyncio.Task], None]) -> None:
        self._state = state
        self._driver = driver
        self._applier = applier
        self._every_slots = every_slots
        self._log_bytes_limit = log_bytes_limit
        self._on_done = on_done
        self._task: asyncio.Task | None = None
        #: The slot of the last snapshot this node saved (where its log starts).
        self.saved_slot = saved_slot
        #: Snapshots this node took and saved since it started.
        self.taken = 0
        #: How long the last one took, start to saved, in seconds.
        self.last_duration_s = 0.0

    @property
    def running(self) -> bool:
        return self._task is not None

    def after_apply(self) -> None:
        """Start a snapshot in the background if one is due and none is running."""
        if self._task is not None:
            return
        if (self._state.applied_slot - self.saved_slot >= self._every_slots
                or self._applier.log_bytes >= self._log_bytes_limit):
            self._task = asyncio.get_running_loop().create_task(self.take(), name="snapshot")
            self._task.add_done_callback(self._finished)

    def installed(self, slot: int) -> None:
        """A snapshot from the leader replaced the state: it is the saved one now."""
        self.saved_slot = max(self.saved_slot, slot)

    async def take(self) -> bool:
        """Take one snapshot now; False if it was abandoned or a newer one was saved."""
        started = time.monotonic()
        log_bytes = self._applier.log_bytes
        dump = snapshots.Dump(self._state)
        try:
            while not dump.step(STEP_JOBS):
                await asyncio.sleep(0)
        finally:
            dump.close()
        if dump.abandoned:
            return False
        data = await asyncio.to_thread(b"".join, dump.chunks)
        dump.chunks.clear()
        if not await self._driver.compact(Snapshot(dump.slot, data)):
            return False
        self.saved_slot = max(self.saved_slot, dump.slot)
        # What was applied while the snapshot was taken is still in the log.
        self._applier.log_bytes = max(0, self._applier.log_bytes - log_bytes)
        self.taken += 1
        self.last_duration_s = time.monotonic() - started
        log.info("snapshot at slot %d saved: %d bytes, %d jobs, in %.0f ms", dump.slot,
                 len(data), dump.jobs, self.last_duration_s * 1000)
        return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _finished(self, task: asyncio.Task) -> None:
        if self._task is task:
            self._task = None
        self._on_done(task)
