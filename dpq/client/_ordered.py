"""Jobs held and not yet handed out, most urgent first by aged key.

Every node serves its own jobs in aged-key order, but a consumer holds jobs
from several nodes at once: handed out in arrival order, a priority-5 job from
a fast node would go before a priority-1 job from a slower one. So the buffer
is a heap on the node's own key::

    aged key = ready_at_us + (priority - 1) * aging_step_us

(the node sends ``ready_at_us`` and its ``aging_step_us`` with every job; step
0 is strict priority: ``(priority, ready_at_us)``). A job from a node that
predates those fields is ordered by ``(priority, created_at_us)``. A job that
arrives while others wait is put in its place among them; when the buffer is
empty a job is handed out at once, as before (no batching, no added wait).
"""

from __future__ import annotations

import asyncio
import itertools

from dpq.client._held import JobRecord
from dpq.v1 import queue_pb2

_WAKE = object()  # look at the consumer's state: always before any job


def urgency(job: queue_pb2.Job) -> tuple[int, int, int, int]:
    """The sort key of ``job``: smaller is handed out first."""
    ready = job.ready_at_us or job.created_at_us
    aged = ready + (job.priority - 1) * job.aging_step_us if job.aging_step_us > 0 else 0
    return aged, job.priority, ready, job.job_id


class UrgentFirst:
    """The consumer's buffer: records by :func:`urgency`, and wake-ups ahead of them."""

    def __init__(self) -> None:
        self._heap: asyncio.PriorityQueue[tuple[int, tuple[int, ...], int, object]] = \
            asyncio.PriorityQueue()
        self._seq = itertools.count()  # ties never compare the records

    def put(self, record: JobRecord) -> None:
        """Hold ``record`` until handed out."""
        self._heap.put_nowait((1, urgency(record.pb), next(self._seq), record))

    def wake(self) -> None:
        """Make the next :meth:`get` return None (the consumer stops or failed)."""
        self._heap.put_nowait((0, (), next(self._seq), _WAKE))

    async def get(self) -> JobRecord | None:
        """The most urgent record, waiting for one; None for a wake-up."""
        item = (await self._heap.get())[3]
        return item if isinstance(item, JobRecord) else None

    def drain(self) -> list[JobRecord]:
        """Take every record out, most urgent first (wake-ups are dropped)."""
        out: list[JobRecord] = []
        while not self._heap.empty():
            item = self._heap.get_nowait()[3]
            if isinstance(item, JobRecord):
                out.append(item)
        return out

    def __len__(self) -> int:
        return self._heap.qsize()
