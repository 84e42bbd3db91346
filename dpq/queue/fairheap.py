"""The per-node fair heap, in plain Python on :mod:`heapq`: the oracle.

:class:`PyFairHeap` is the twin of the compiled :class:`dpq._fastheap.FairHeap`.
Same API, same results, same error messages; ``tests/test_fairheap.py`` drives
both with the same operation sequences and requires identical answers.  It is
:class:`dpq.queue.heap.PyHeap` with one more argument on ``push``: the job's
*tenant*, a small non-negative int (the node maps ``fairness_key`` strings to
ints; tenant 0, the job without a key, is a tenant like any other).

Ordering
--------
Jobs, keys, time, delayed jobs, membership and refusals are PyHeap's (read
its docstring): every job has the static aging key
``ready_at + (priority - 1) * aging_step_us`` and a tenant's jobs are served
in ``(key, push order)``.  The tenant's first job in that order is its *head*.

Which tenant is served is decided in three steps, at the clock ``now``:

1. **Level.**  A ready job's effective level is
   ``L = max(1, priority - floor((now - ready_at) / aging_step_us))``, which is
   ``1 + ceil((key - now) / aging_step_us)`` clamped to at least 1 (with
   ``aging_step_us=0``: ``L = priority``).  L only grows with the key, so a
   tenant's level is its head's.  The best (lowest) level among the heads
   wins: a job at a more urgent level is served before a less urgent one,
   whatever its tenant.
2. **Turns.**  Among the tenants whose head is at that level, the one with
   the lowest *effective pass* ``max(pass, V)`` is served; ties go to the
   lowest tenant id.  Serving it sets ``V`` (the virtual time) to that
   effective pass and its pass to ``V + STRIDE // weight``.  This is stride
   scheduling: while tenants stay backlogged at one level, each gets turns in
   proportion to its weight.  ``max(pass, V)`` means a tenant that was idle,
   new, or waiting at a less urgent level joins the turns at the current
   virtual time: it neither jumps ahead of the others on credit it saved up
   nor pays again for turns it had before.
3. **The tenant's head** is popped: within a tenant, jobs go by (key, push order).

With a single tenant this is exactly PyHeap's order.

Memory of turns
---------------
A tenant's pass is remembered only while it can matter: a tenant with no ready
job and ``pass <= V`` behaves exactly like one never seen, so it is forgotten.
When no job is ready at all (a busy period ends) every pass is forgotten and
``V`` moves up to the largest one, so a burst of 10,000 short-lived tenants
leaves nothing behind.  Weights (``set_weight``) are settings, kept until
``reset_weight``; a changed weight counts from the tenant's next turn.

Refusals (besides PyHeap's)
---------------------------
ValueError naming the value and the limit for a tenant outside
``0..TENANT_MAX`` and a weight outside ``WEIGHT_MIN..WEIGHT_MAX``.
"""

from __future__ import annotations

import heapq
import operator
from typing import Any

from dpq.queue.heap import (
    DEFAULT_AGING_STEP_US,
    PRIORITY_MAX,
    PRIORITY_MIN,
    HeapCore,
    _i64,
    _priority_error,
    _u64,
)

__all__ = [
    "STRIDE",
    "TENANT_MAX",
    "WEIGHT_MAX",
    "WEIGHT_MIN",
    "PyFairHeap",
]

TENANT_MAX = 2**32 - 1
WEIGHT_MIN = 1
WEIGHT_MAX = 1000
#: A turn of a weight-w tenant advances its pass by ``STRIDE // w``.
STRIDE = 1 << 20


def check_tenant(value: Any) -> int:
    value = operator.index(value)
    if not 0 <= value <= TENANT_MAX:
        raise ValueError(f"tenant must be 0 to {TENANT_MAX}, got {value}")
    return value


def check_weight(value: Any) -> int:
    value = operator.index(value)
    if not WEIGHT_MIN <= value <= WEIGHT_MAX:
        raise ValueError(f"weight must be {WEIGHT_MIN} to {WEIGHT_MAX}, got {value}")
    return value


class _Tenant:
    __slots__ = ("heap", "pass_", "ready")

    def __init__(self) -> None:
        self.heap: list[tuple[Any, int, int, int]] = []  # (key, seq, job_id, priority)
        self.pass_ = 0
        self.ready = 0  # live jobs in heap


class PyFairHeap(HeapCore):
    """A priority heap of job ids with aging, delayed jobs and fair shares by tenant.

    See the module docstring for the ordering rules.
    """

    __slots__ = ("_default_weight", "_tenants", "_vtime", "_weights")

    def __init__(self, aging_step_us: int = DEFAULT_AGING_STEP_US) -> None:
        super().__init__(aging_step_us)
        # _delayed holds (due, seq, job_id, key, priority, tenant)
        # and _live job id -> (seq, priority, due, tenant)
        self._vtime = 0
        self._tenants: dict[int, _Tenant] = {}
        self._weights: dict[int, int] = {}
        self._default_weight = 1

    # -- weights -----------------------------------------------------------

    def set_weight(self, tenant: int, weight: int) -> None:
        """Give ``tenant`` turns in proportion to ``weight`` (1..1000), from its next turn."""
        tenant = check_tenant(tenant)
        self._weights[tenant] = check_weight(weight)

    def reset_weight(self, tenant: int) -> None:
        """Back to the default weight."""
        self._weights.pop(check_tenant(tenant), None)

    def weight(self, tenant: int) -> int:
        return self._weights.get(check_tenant(tenant), self._default_weight)

    def set_default_weight(self, weight: int) -> None:
        """The weight of every tenant without one of its own (1 unless set)."""
        self._default_weight = check_weight(weight)

    @property
    def default_weight(self) -> int:
        return self._default_weight

    # -- internals -------------------------------------------------------

    def _level(self, key: Any) -> int:
        if self._step == 0:
            return key[0]
        if key <= self._clock:
            return 1
        return 1 + -((self._clock - key) // self._step)  # 1 + ceil((key - now) / step)

    def _add_ready(self, job_id: int, seq: int, key: Any, prio: int, tenant: int) -> None:
        t = self._tenants.get(tenant)
        if t is None:
            t = self._tenants[tenant] = _Tenant()
        heapq.heappush(t.heap, (key, seq, job_id, prio))
        t.ready += 1
        self._ready_by_prio[prio - 1] += 1

    def _advance(self, now_us: Any) -> None:
        self._clock = max(self._clock, _i64(now_us, "now_us"))
        while self._delayed and self._delayed[0][0] <= self._clock:
            _due, seq, job_id, key, prio, tenant = heapq.heappop(self._delayed)
            if self._is_live(job_id, seq):
                self._delayed_live -= 1
                self._add_ready(job_id, seq, key, prio, tenant)

    def _head(self, t: _Tenant) -> tuple[Any, int, int, int]:
        while not self._is_live(t.heap[0][2], t.heap[0][1]):
            heapq.heappop(t.heap)
        return t.heap[0]

    def _choose(self) -> int | None:
        """The tenant served next (see the module docstring), or None."""
        backlogged = [(tenant, t) for tenant, t in self._tenants.items() if t.ready]
        if not backlogged:
            return None
        levels = {tenant: self._level(self._head(t)[0]) for tenant, t in backlogged}
        best = min(levels.values())
        return min(
            (max(t.pass_, self._vtime), tenant)
            for tenant, t in backlogged
            if levels[tenant] == best
        )[1]

    def _went_idle(self, tenant: int) -> None:
        t = self._tenants[tenant]
        if t.ready:
            return
        t.heap.clear()  # only tombstones are left
        if t.pass_ <= self._vtime:
            del self._tenants[tenant]
        if not any(x.ready for x in self._tenants.values()):  # the busy period is over
            self._vtime = max([self._vtime] + [x.pass_ for x in self._tenants.values()])
            self._tenants.clear()

    def _serve(self, tenant: int) -> int:
        t = self._tenants[tenant]
        self._vtime = max(t.pass_, self._vtime)
        t.pass_ = self._vtime + STRIDE // self._weights.get(tenant, self._default_weight)
        _key, _seq, job_id, prio = self._head(t)
        heapq.heappop(t.heap)
        del self._live[job_id]
        t.ready -= 1
        self._ready_by_prio[prio - 1] -= 1
        self._went_idle(tenant)
        return job_id

    def _insert(self, job_id: int, priority: int, key: Any, due: int, tenant: int) -> None:
        self._seq += 1
        self._live[job_id] = (self._seq, priority, due, tenant)
        if due <= self._clock:
            self._add_ready(job_id, self._seq, key, priority, tenant)
        else:
            heapq.heappush(self._delayed, (due, self._seq, job_id, key, priority, tenant))
            self._delayed_live += 1

    # -- adding ----------------------------------------------------------

    def push(
        self,
        job_id: int,
        priority: int,
        enqueued_at_us: int,
        due_at_us: int = 0,
        tenant: int = 0,
    ) -> None:
        """Add one job.  ValueError for a bad priority or tenant, or an id already here."""
        job_id = _u64(job_id, "job_id")
        enqueued_at_us = _i64(enqueued_at_us, "enqueued_at_us")
        due_at_us = _i64(due_at_us, "due_at_us")
        priority = operator.index(priority)
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise ValueError(_priority_error(priority))
        tenant = check_tenant(tenant)
        key = self._key(priority, enqueued_at_us, due_at_us)
        if job_id in self._live:
            raise ValueError(f"job id {job_id} is already in the heap")
        self._insert(job_id, priority, key, due_at_us, tenant)

    # -- taking ----------------------------------------------------------

    def pop(self, now_us: int) -> int | None:
        """Remove and return the next job id by level, then turns, then the tenant's order."""
        self._advance(now_us)
        tenant = self._choose()
        return None if tenant is None else self._serve(tenant)

    def peek(self, now_us: int) -> int | None:
        """The job id ``pop(now_us)`` would return, without removing it."""
        self._advance(now_us)
        tenant = self._choose()
        return None if tenant is None else self._head(self._tenants[tenant])[2]

    def remove(self, job_id: int) -> bool:
        """Take a ready or delayed job out; False if it is not here."""
        job_id = _u64(job_id, "job_id")
        entry = self._live.pop(job_id, None)
        if entry is None:
            return False
        _seq, prio, due, tenant = entry
        if due <= self._clock:
            self._ready_by_prio[prio - 1] -= 1
            self._tenants[tenant].ready -= 1
            self._went_idle(tenant)
        else:
            self._delayed_live -= 1
        return True

    def clear(self) -> None:
        """Drop every job and every pass.  The clock and the weights are kept."""
        super().clear()
        self._tenants.clear()
        self._vtime = 0

    # -- looking ---------------------------------------------------------

    def ready_by_tenant(self, now_us: int) -> dict[int, int]:
        """Ready jobs per tenant that has any, in tenant order."""
        self._advance(now_us)
        return {tenant: t.ready for tenant, t in sorted(self._tenants.items()) if t.ready}

    def remembered_tenants(self) -> int:
        """Tenants whose turn state is held: memory, not ordering (implementations differ)."""
        return len(self._tenants)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(aging_step_us={self._step}, "
            f"ready={sum(self._ready_by_prio)}, delayed={self._delayed_live}, "
            f"tenants={sum(1 for t in self._tenants.values() if t.ready)})"
        )
