"""Priority order as the consumers saw it: the share of out-of-order deliveries.

A delivery of job j at time t is *out of order* when some other job k was
ready somewhere in the cluster at t and strictly more urgent than j:

- ready at t: k's enqueue had returned to its producer before t (so the
  cluster had committed it) and k had not been delivered by t;
- more urgent: k's aged key is smaller than j's, the key the nodes serve by
  (``dpq/queue/heap.py``): ``ready_at + (priority - 1) * aging_step``; with
  step 0 (strict priority) the key is ``(priority, ready_at)``.

Ready times are the producers' enqueue-return times (the node's commit time
is a little earlier and not visible from outside), the same for every job,
so a job counts as ready a round trip late: the figure errs on the low side
by about one enqueue round trip. Each job's first delivery counts; a job
never delivered is ready to the end. Deliveries of jobs whose enqueue never
returned (an error) are not judged.

One sweep in time order: jobs enter a heap of ``(aged key, delivery time)``
when their enqueue returned; at each delivery the heap's top is dropped while
it was delivered by then (lazy deletion), and what is left on top is the most
urgent ready job. O(n log n) time, a few tuples per job of memory.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

NEVER = 2**63 - 1
#: Above any monotonic time in ns (about 36 years of uptime): the strict-priority key's unit.
STRICT = 1 << 60


def out_of_order(job_ids: Sequence[int], priorities: Sequence[int], returned_ns: Sequence[int],
                 delivered_ids: Sequence[int], delivered_ns: Sequence[int],
                 aging_step_ns: int | None) -> dict[str, float | int | None]:
    """Jobs: id, priority and enqueue-return time (ns) at the same index; deliveries: job id
    and time (ns), redeliveries included (the first counts). ``aging_step_ns=None``
    compares priorities alone (a lower priority number ready elsewhere, order within a
    priority not judged).

    ``{"deliveries": judged, "out_of_order": count, "share": count / judged (None if 0)}``.
    """
    n = len(job_ids)
    # One int per key, so the sorts and the heap compare plain ints.
    if aging_step_ns is None:
        keys = list(priorities)
    elif aging_step_ns:
        keys = [r + (p - 1) * aging_step_ns for p, r in zip(priorities, returned_ns, strict=True)]
    else:
        keys = [p * STRICT + r for p, r in zip(priorities, returned_ns, strict=True)]
    index = dict(zip(job_ids, range(n), strict=True))
    first = [NEVER] * n
    for job_id, t in zip(delivered_ids, delivered_ns, strict=True):
        i = index.get(job_id)
        if i is not None and t < first[i]:
            first[i] = t
    del index
    by_return = sorted(range(n), key=returned_ns.__getitem__)
    judged = sorted((i for i in range(n) if first[i] != NEVER), key=first.__getitem__)
    heap: list[tuple[int, int]] = []  # (key, first delivery) of the jobs ready so far
    nxt = count = 0
    for i in judged:
        t = first[i]
        while nxt < n and returned_ns[by_return[nxt]] < t:
            j = by_return[nxt]
            heapq.heappush(heap, (keys[j], first[j]))
            nxt += 1
        while heap and heap[0][1] <= t:  # delivered by now (this job itself included)
            heapq.heappop(heap)
        if heap and heap[0][0] < keys[i]:
            count += 1
    return {"deliveries": len(judged), "out_of_order": count,
            "share": count / len(judged) if judged else None}
