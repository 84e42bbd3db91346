"""How long the oldest ready job of each queue and priority has waited: the queue lag.

Derived, never replicated and never in a snapshot: every replica rebuilds it
from its jobs (:meth:`QueueState.restore_job` pushes every READY job while a
snapshot loads), so it costs nothing on the wire or on disk.

One lazy min-heap of ``(ready_at_us, job_id)`` per ``(queue, priority)``. A job
is pushed each time it enters READY (enqueue, nack, expiry, retry, a snapshot
load) and when SetPriority moves a READY job to another priority. Nothing is
removed when a job leaves READY (lease, cancel, purge) or changes priority: an
entry is *stale* unless its job is still READY with that priority and that
ready time, and stale entries are skipped, and dropped, when they reach the top
of a query. So a query's answer is exactly the smallest ready time among the
READY jobs of that queue and priority.

Bounded, whether anybody asks or not: a heap never holds more than ``2 * live
+ SLACK`` entries (``live`` = the READY jobs of that queue and priority, which
the state machine counts anyway). The state machine says when a job enters
(:meth:`ReadyAges.push`) or leaves (:meth:`ReadyAges.left`) a heap's set, and
past the bound the heap is rebuilt from its valid entries: between two
rebuilds at least half the entries are new or gone, so a rebuild costs O(1)
checks per push or leave, amortized. A queue the state machine forgets (it
holds nothing) drops its heaps.

Cost: one ``heappush`` of a 2-tuple per job that enters READY, whose ints are
the job's own objects (``job.ready_at_us``, ``job.job_id``): 64 B per entry
(the tuple and its list slot), so at most 128 B per READY job with the garbage
the bound allows, plus ``SLACK`` entries per (queue, priority); and a dict
lookup and a comparison per job that leaves READY.
"""

from __future__ import annotations

import heapq

from dpq.queue.jobs import Job, JobState

#: Entries beyond twice the live ones a heap may hold before it is compacted.
SLACK = 64


class ReadyAges:
    """``(queue, priority)`` -> lazy min-heap of ``(ready_at_us, job_id)`` over ``jobs``."""

    __slots__ = ("_heaps", "_jobs")

    def __init__(self, jobs: dict[int, Job]) -> None:
        self._jobs = jobs
        self._heaps: dict[tuple[str, int], list[tuple[int, int]]] = {}

    def push(self, job: Job, live: int) -> None:
        """``job`` is READY now (its queue, priority and ready time are final); ``live``:
        the READY jobs of its queue and priority, this one included."""
        key = (job.queue, job.priority)
        heap = self._heaps.get(key)
        if heap is None:
            heap = self._heaps[key] = []
        heapq.heappush(heap, (job.ready_at_us, job.job_id))
        if len(heap) > 2 * live + SLACK:
            self._compact(key, heap, 0)

    def left(self, job: Job, priority: int, live: int) -> None:
        """``job`` leaves the READY jobs of its queue with ``priority`` (it is leased,
        cancelled, removed, or moved to another priority); ``live``: the READY jobs left
        there."""
        key = (job.queue, priority)
        heap = self._heaps.get(key)
        if heap is not None and len(heap) > 2 * live + SLACK:
            self._compact(key, heap, job.job_id)

    def oldest_ready_at(self, queue: str, priority: int) -> int | None:
        """The smallest ready time among the READY jobs (delayed ones included) of
        ``queue`` with ``priority``, or None; drops the stale entries on top."""
        heap = self._heaps.get((queue, priority))
        if not heap:
            return None
        jobs = self._jobs
        while heap:
            ready_at, job_id = heap[0]
            job = jobs.get(job_id)
            if (job is not None and job.state == JobState.READY and job.priority == priority
                    and job.ready_at_us == ready_at):
                return ready_at
            heapq.heappop(heap)
        return None

    def age_us(self, queue: str, priority: int, now_us: int) -> int:
        """How long the oldest *due* READY job has waited by ``now_us`` (0: none is due)."""
        ready_at = self.oldest_ready_at(queue, priority)
        if ready_at is None or ready_at > now_us:
            return 0
        return now_us - ready_at

    def forget(self, queue: str, priorities: int) -> None:
        """The queue holds nothing any more: drop its heaps."""
        for priority in range(1, priorities + 1):
            self._heaps.pop((queue, priority), None)

    def entries(self) -> int:
        """Entries held over all heaps, stale ones included (for tests and memory)."""
        return sum(len(h) for h in self._heaps.values())

    def _compact(self, key: tuple[str, int], heap: list[tuple[int, int]], leaving: int) -> None:
        """Keep the valid entries, once each; not ``leaving``'s (still READY, on its way out)."""
        queue, priority = key
        jobs = self._jobs
        seen: set[int] = {leaving}
        kept = []
        for entry in heap:
            job = jobs.get(entry[1])
            if (job is not None and job.state == JobState.READY and job.priority == priority
                    and job.ready_at_us == entry[0] and job.queue == queue
                    and entry[1] not in seen):
                seen.add(entry[1])
                kept.append(entry)
        heapq.heapify(kept)
        heap[:] = kept
