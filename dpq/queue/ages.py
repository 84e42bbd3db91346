"""How long the oldest ready job of each queue and priority has waited: the queue lag.

Derived, never replicated and never in a snapshot: every replica rebuilds it
from its jobs (:meth:`QueueState.restore_job` pushes every READY job while a
snapshot loads), so it costs nothing on the wire or on disk.

One :class:`_Lane` per ``(queue, priority)``: the ``(ready_at_us, job_id)`` of
every job that entered READY there, in two places. Jobs ready at once, in
ready-time order (the usual case: the leader's clock only moves forward, so
enqueues, nacks without delay and retries arrive in order), go at the end of
two deques of ints (no tuple, no object the garbage collector tracks); the
rest (delayed jobs, a job moved by SetPriority with its old ready time, a
snapshot's jobs out of order) go into a small heap of tuples. Nothing is
removed when a job leaves READY or changes priority: an entry is *stale*
unless its job is still READY with that priority and that ready time. So the
smallest valid entry of the deques' front and the heap's top is exactly the
smallest ready time among the READY jobs of that queue and priority.

Kept small whether anybody asks or not:

* when a job leaves READY (:meth:`ReadyAges.left`) from the front of the
  deques, its entry goes at once: jobs are mostly leased in ready order, so the
  deques hold little more than the READY jobs;
* a lane never holds more than ``2 * live + SLACK`` entries (``live``: the
  READY jobs of the lane, which the state machine counts anyway): past that,
  checked at every push and leave, it is rebuilt from its valid entries; between
  two rebuilds at least half its entries came or went, so that is O(1) checks
  per push or leave, amortized;
* a queue the state machine forgets (it holds nothing) drops its lanes.

Cost: per job that enters READY a dict lookup and two deque appends of ints
the job already holds (16 B, the deques' slots), per job that leaves a dict
lookup, a comparison and two ``popleft``: about 0.5 µs per job in all
(measured with the apply benchmark, see the metrics report), 16-32 B per READY
job; entries out of order cost a 2-tuple in the heap (64 B).
"""

from __future__ import annotations

import heapq
from collections import deque

from dpq.queue.jobs import Job, JobState
from dpq.queue.rules import PRIORITY_MAX

#: Entries beyond the bound a lane may hold before it is rebuilt.
SLACK = 64


class _Lane:
    __slots__ = ("at", "heap", "ids")

    def __init__(self) -> None:
        self.at: deque[int] = deque()  # ready times, not decreasing
        self.ids: deque[int] = deque()  # the job of each
        self.heap: list[tuple[int, int]] = []  # (ready_at_us, job_id) out of order

    def size(self) -> int:
        return len(self.ids) + len(self.heap)


def _valid(jobs: dict[int, Job], job_id: int, ready_at: int, priority: int) -> bool:
    job = jobs.get(job_id)
    return (job is not None and job.state == JobState.READY and job.priority == priority
            and job.ready_at_us == ready_at)


class ReadyAges:
    """``(queue, priority)`` -> the ready times of its READY jobs, over ``jobs``."""

    __slots__ = ("_jobs", "_lanes")

    def __init__(self, jobs: dict[int, Job]) -> None:
        self._jobs = jobs
        # queue -> its lanes, index priority - 1 (one string lookup, no key tuple per job)
        self._lanes: dict[str, list[_Lane | None]] = {}

    def push(self, job: Job, live: int, now_us: int) -> None:
        """``job`` is READY now (its queue, priority and ready time are final); ``live``:
        the READY jobs of its queue and priority, this one included; ``now_us``: the
        state machine's clock."""
        lanes = self._lanes.get(job.queue)
        if lanes is None:
            lanes = self._lanes[job.queue] = [None] * PRIORITY_MAX
        lane = lanes[job.priority - 1]
        if lane is None:
            lane = lanes[job.priority - 1] = _Lane()
        ready_at, at, ids = job.ready_at_us, lane.at, lane.ids
        if ready_at <= now_us and (not at or at[-1] <= ready_at):
            at.append(ready_at)
            ids.append(job.job_id)
        else:
            heapq.heappush(lane.heap, (ready_at, job.job_id))
        if len(ids) + len(lane.heap) > 2 * live + SLACK:
            self._rebuild(lane, job.priority, 0)

    def left(self, job: Job, priority: int, live: int) -> None:
        """``job`` leaves the READY jobs of its queue with ``priority`` (leased, cancelled,
        removed, or moved to another priority); ``live``: the READY jobs left there."""
        lanes = self._lanes.get(job.queue)
        lane = lanes[priority - 1] if lanes is not None else None
        if lane is None:
            return
        ids = lane.ids
        if ids and ids[0] == job.job_id:  # the usual case: the oldest goes first
            ids.popleft()
            lane.at.popleft()
        if len(ids) + len(lane.heap) > 2 * live + SLACK:
            self._rebuild(lane, priority, job.job_id)

    def oldest_ready_at(self, queue: str, priority: int) -> int | None:
        """The smallest ready time among the READY jobs (delayed ones included) of
        ``queue`` with ``priority``, or None; drops the stale entries it meets."""
        lanes = self._lanes.get(queue)
        lane = lanes[priority - 1] if lanes is not None else None
        if lane is None:
            return None
        at, ids, heap, jobs = lane.at, lane.ids, lane.heap, self._jobs
        while ids and not _valid(jobs, ids[0], at[0], priority):
            ids.popleft()
            at.popleft()
        while heap and not _valid(jobs, heap[0][1], heap[0][0], priority):
            heapq.heappop(heap)
        first = at[0] if at else None
        top = heap[0][0] if heap else None
        if first is None or (top is not None and top < first):
            return top
        return first

    def age_us(self, queue: str, priority: int, now_us: int) -> int:
        """How long the oldest *due* READY job has waited by ``now_us`` (0: none is due)."""
        ready_at = self.oldest_ready_at(queue, priority)
        if ready_at is None or ready_at > now_us:
            return 0
        return now_us - ready_at

    def forget(self, queue: str) -> None:
        """The queue holds nothing any more: drop its lanes."""
        self._lanes.pop(queue, None)

    def entries(self) -> int:
        """Entries held over all lanes, stale ones included (for tests and memory)."""
        return sum(self.lane_sizes().values())

    def lane_sizes(self) -> dict[tuple[str, int], int]:
        """``(queue, priority)`` -> entries held, stale ones included."""
        return {(queue, i + 1): lane.size() for queue, lanes in self._lanes.items()
                for i, lane in enumerate(lanes) if lane is not None}

    def _rebuild(self, lane: _Lane, priority: int, leaving: int) -> None:
        """Keep the valid entries, once each; not ``leaving``'s (still READY, on its way out).
        (A job's entries are all in the lanes of its own queue.)"""
        jobs = self._jobs
        seen: set[int] = {leaving}
        at: deque[int] = deque()
        ids: deque[int] = deque()
        for ready_at, job_id in zip(lane.at, lane.ids):
            if job_id not in seen and _valid(jobs, job_id, ready_at, priority):
                seen.add(job_id)
                at.append(ready_at)
                ids.append(job_id)
        heap = []
        for ready_at, job_id in lane.heap:
            if job_id not in seen and _valid(jobs, job_id, ready_at, priority):
                seen.add(job_id)
                heap.append((ready_at, job_id))
        heapq.heapify(heap)
        lane.at, lane.ids, lane.heap = at, ids, heap
