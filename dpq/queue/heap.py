"""The per-node priority heap, in plain Python on :mod:`heapq`: the oracle.

:class:`PyHeap` is the twin of the compiled :class:`dpq._fastheap.FastHeap`.
Same API, same results, same error messages; the property tests in
``tests/test_heap.py`` drive both with the same operation sequences and
require identical answers.  Production code uses ``FastHeap``; this one exists
to be obviously right and is kept simple rather than fast.

Ordering
--------
Priority 1 is the most urgent, 5 the least.  Every job gets a static aging key::

    ready_at_us = max(enqueued_at_us, due_at_us)
    key         = ready_at_us + (priority - 1) * aging_step_us

and jobs are served by ``(key, push order)``.  A priority-5 job that became
ready at ``t`` is therefore served before any priority-1 job that becomes
ready after ``t + 4 * aging_step_us``: nothing starves and no key is ever
rewritten.  ``aging_step_us=0`` is strict priority: jobs are served by
``(priority, ready_at_us, push order)`` (ready times must then lie within
``STRICT_MIN_US..STRICT_MAX_US``, about 36,000 years either side of 1970).

Time and delayed jobs
---------------------
Nothing here reads a clock: every call that needs the time takes ``now_us``
(microseconds).  The heap remembers the latest ``now_us`` it was given (the
clock starts at 0) and a job is *ready* once that clock has reached its
``due_at_us``; before that it is *delayed* and waits in a second heap ordered
by ``(due_at_us, push order)``.  Every call taking ``now_us`` first promotes the
jobs that fell due.  Promotion is monotonic: a ``now_us`` earlier than one seen
before does not make a ready job delayed again.  Times are microseconds since
the epoch; the default ``due_at_us=0`` means no delay.

Membership
----------
A job id is in the heap from its push until it is popped or removed, whether
ready or delayed; pushing it again in that time is refused.  Removal is lazy:
the heap entry stays behind as a tombstone and is skipped when it reaches the
top, so it never shows in counts, ``peek`` or ``pop``.

Refusals
--------
ValueError, naming the value and the limit, for a priority outside 1..5, an id
already in the heap, an aging key that does not fit in int64 (or a ready time
outside the strict-mode range) and a negative ``pop_many`` count.  A refused
call changes nothing; ``push_many`` checks the whole batch first, item by
item (priority, key, id), and reports the first bad one.  Ids and times must
be ints (``__index__``): TypeError otherwise, OverflowError if they do not
fit in uint64 / int64.
"""

from __future__ import annotations

import heapq
import operator
from array import array
from typing import Any

from dpq.queue.rules import PRIORITY_MAX, PRIORITY_MIN

__all__ = [
    "DEFAULT_AGING_STEP_US",
    "MAX_AGING_STEP_US",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "STRICT_MAX_US",
    "STRICT_MIN_US",
    "HeapCore",
    "PyHeap",
]

#: A priority-5 job waits at most ``4 * 5 s`` behind newer priority-1 jobs.
DEFAULT_AGING_STEP_US = 5_000_000
#: The largest step for which ``(priority - 1) * aging_step_us`` fits in int64.
MAX_AGING_STEP_US = (2**63 - 1) // (PRIORITY_MAX - PRIORITY_MIN)
#: With ``aging_step_us=0`` (strict priority) ready times must lie in this range.
STRICT_MIN_US = -(2**60)
STRICT_MAX_US = 2**60 - 1

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_U64_MAX = 2**64 - 1


def _u64(value: Any, what: str) -> int:
    value = operator.index(value)
    if not 0 <= value <= _U64_MAX:
        raise OverflowError(f"{what} {value} does not fit in uint64")
    return value


def _i64(value: Any, what: str) -> int:
    value = operator.index(value)
    if not _I64_MIN <= value <= _I64_MAX:
        raise OverflowError(f"{what} {value} does not fit in int64")
    return value


def _priority_error(value: int) -> str:
    return (
        f"priority must be {PRIORITY_MIN} (most urgent) to {PRIORITY_MAX} (least urgent), "
        f"got {value}"
    )


def _key_error(ready_at_us: int, priority: int, step: int) -> str:
    if step == 0:
        return (
            f"ready time {ready_at_us} is out of range for strict priority "
            f"(aging_step_us=0): must be {STRICT_MIN_US} to {STRICT_MAX_US}"
        )
    return (
        f"aging key overflows int64: ready time {ready_at_us} + "
        f"(priority {priority} - 1) * aging_step_us {step}"
    )


class HeapCore:
    """What PyHeap and PyFairHeap share: the aging key, the clock, membership and counts.

    A subclass keeps ``_delayed`` entries starting ``(due, seq, job_id, ...)``,
    ``_live`` mapping job id -> ``(seq, ...)``, and brings ``_advance`` and ``pop``.
    """

    __slots__ = ("_clock", "_delayed", "_delayed_live", "_live", "_ready_by_prio", "_seq", "_step")

    def __init__(self, aging_step_us: int = DEFAULT_AGING_STEP_US) -> None:
        step = operator.index(aging_step_us)
        if not 0 <= step <= MAX_AGING_STEP_US:
            raise ValueError(
                f"aging_step_us must be 0 to {MAX_AGING_STEP_US} microseconds, got {step}"
            )
        self._step = step
        self._clock = 0
        self._seq = 0
        self._delayed: list[tuple[Any, ...]] = []
        self._live: dict[int, tuple[int, ...]] = {}  # an entry whose seq differs is a tombstone
        self._ready_by_prio = [0] * PRIORITY_MAX
        self._delayed_live = 0

    @property
    def aging_step_us(self) -> int:
        return self._step

    def _advance(self, now_us: Any) -> None:
        raise NotImplementedError

    def pop(self, now_us: int) -> int | None:
        raise NotImplementedError

    def _is_live(self, job_id: int, seq: int) -> bool:
        entry = self._live.get(job_id)
        return entry is not None and entry[0] == seq

    def _key(self, priority: int, enqueued_at_us: int, due_at_us: int) -> Any:
        ready_at = max(enqueued_at_us, due_at_us)
        if self._step == 0:
            if not STRICT_MIN_US <= ready_at <= STRICT_MAX_US:
                raise ValueError(_key_error(ready_at, priority, 0))
            return (priority, ready_at)
        key = ready_at + (priority - 1) * self._step
        if key > _I64_MAX:
            raise ValueError(_key_error(ready_at, priority, self._step))
        return key

    def pop_many(self, n: int, now_us: int) -> array:
        """Remove and return up to ``n`` ready job ids in ``pop`` order."""
        n = operator.index(n)
        if not _I64_MIN <= n <= _I64_MAX:
            raise OverflowError(f"n {n} does not fit in Py_ssize_t")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self._advance(now_us)
        out = array("Q")
        while len(out) < n:
            job_id = self.pop(self._clock)
            if job_id is None:
                break
            out.append(job_id)
        return out

    def clear(self) -> None:
        """Drop every job.  The clock is kept: time does not go back."""
        self._delayed.clear()
        self._live.clear()
        self._ready_by_prio = [0] * PRIORITY_MAX
        self._delayed_live = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, job_id: object) -> bool:
        try:
            key = operator.index(job_id)  # type: ignore[arg-type]
        except TypeError:
            return False
        return key in self._live

    def ready_count(self, now_us: int) -> int:
        self._advance(now_us)
        return sum(self._ready_by_prio)

    def delayed_count(self, now_us: int) -> int:
        self._advance(now_us)
        return self._delayed_live

    def ready_by_priority(self, now_us: int) -> tuple[int, int, int, int, int]:
        """Ready jobs per priority; index 0 is priority 1."""
        self._advance(now_us)
        return tuple(self._ready_by_prio)  # type: ignore[return-value]

    def next_due_us(self) -> int | None:
        """When the earliest delayed job falls due, or None if none waits."""
        while self._delayed and not self._is_live(self._delayed[0][2], self._delayed[0][1]):
            heapq.heappop(self._delayed)
        return self._delayed[0][0] if self._delayed else None


class PyHeap(HeapCore):
    """A priority heap of job ids with static aging and delayed jobs.

    See the module docstring for the ordering rules.  Job ids are uint64,
    times int64 microseconds.
    """

    __slots__ = ("_ready",)

    def __init__(self, aging_step_us: int = DEFAULT_AGING_STEP_US) -> None:
        super().__init__(aging_step_us)
        # (key, seq, job_id, priority); _delayed holds (due, seq, job_id, key, priority)
        # and _live job id -> (seq, priority, due)
        self._ready: list[tuple[int, int, int, int]] = []

    # -- internals -------------------------------------------------------

    def _advance(self, now_us: Any) -> None:
        self._clock = max(self._clock, _i64(now_us, "now_us"))
        while self._delayed and self._delayed[0][0] <= self._clock:
            _due, seq, job_id, key, prio = heapq.heappop(self._delayed)
            if self._is_live(job_id, seq):
                heapq.heappush(self._ready, (key, seq, job_id, prio))
                self._delayed_live -= 1
                self._ready_by_prio[prio - 1] += 1

    def _drop_dead_ready_top(self) -> None:
        while self._ready and not self._is_live(self._ready[0][2], self._ready[0][1]):
            heapq.heappop(self._ready)

    def _insert(self, job_id: int, priority: int, key: int, due: int) -> None:
        self._seq += 1
        self._live[job_id] = (self._seq, priority, due)
        if due <= self._clock:
            heapq.heappush(self._ready, (key, self._seq, job_id, priority))
            self._ready_by_prio[priority - 1] += 1
        else:
            heapq.heappush(self._delayed, (due, self._seq, job_id, key, priority))
            self._delayed_live += 1

    # -- adding ----------------------------------------------------------

    def push(self, job_id: int, priority: int, enqueued_at_us: int, due_at_us: int = 0) -> None:
        """Add one job.  ValueError for a bad priority or an id already here."""
        job_id = _u64(job_id, "job_id")
        enqueued_at_us = _i64(enqueued_at_us, "enqueued_at_us")
        due_at_us = _i64(due_at_us, "due_at_us")
        priority = operator.index(priority)
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise ValueError(_priority_error(priority))
        key = self._key(priority, enqueued_at_us, due_at_us)
        if job_id in self._live:
            raise ValueError(f"job id {job_id} is already in the heap")
        self._insert(job_id, priority, key, due_at_us)

    def push_many(
        self, job_ids: Any, priorities: Any, enqueued_at_us: Any, due_at_us: Any = None
    ) -> None:
        """Add a batch; all or nothing.

        Items are checked in order (priority, aging key, duplicate id) and the
        first bad one refuses the whole batch with ValueError.
        """
        ids = array("Q", job_ids)
        prios = array("q", priorities)
        enq = array("q", enqueued_at_us)
        due = array("q", due_at_us) if due_at_us is not None else None
        lengths = [len(ids), len(prios), len(enq)] + ([len(due)] if due is not None else [])
        if len(set(lengths)) != 1:
            raise ValueError(
                "job_ids, priorities, enqueued_at_us and due_at_us must have the same "
                f"length, got {', '.join(map(str, lengths))}"
            )
        keys = []
        seen: dict[int, int] = {}
        for i, job_id in enumerate(ids):
            prio = prios[i]
            if not PRIORITY_MIN <= prio <= PRIORITY_MAX:
                raise ValueError(f"priorities[{i}]: {_priority_error(prio)}")
            d = due[i] if due is not None else 0
            try:
                keys.append(self._key(prio, enq[i], d))
            except ValueError as exc:
                raise ValueError(f"item {i}: {exc}") from None
            if job_id in self._live:
                raise ValueError(f"job_ids[{i}]: job id {job_id} is already in the heap")
            if job_id in seen:
                raise ValueError(f"job_ids[{i}]: job id {job_id} repeats job_ids[{seen[job_id]}]")
            seen[job_id] = i
        for i, job_id in enumerate(ids):
            self._insert(job_id, prios[i], keys[i], due[i] if due is not None else 0)

    # -- taking ----------------------------------------------------------

    def pop(self, now_us: int) -> int | None:
        """Remove and return the most urgent ready job id, or None."""
        self._advance(now_us)
        while self._ready:
            _key, seq, job_id, prio = heapq.heappop(self._ready)
            if self._is_live(job_id, seq):
                del self._live[job_id]
                self._ready_by_prio[prio - 1] -= 1
                return job_id
        return None

    def peek(self, now_us: int) -> int | None:
        """The job id ``pop(now_us)`` would return, without removing it."""
        self._advance(now_us)
        self._drop_dead_ready_top()
        return self._ready[0][2] if self._ready else None

    def remove(self, job_id: int) -> bool:
        """Take a ready or delayed job out; False if it is not here."""
        job_id = _u64(job_id, "job_id")
        entry = self._live.pop(job_id, None)
        if entry is None:
            return False
        _seq, prio, due = entry
        if due <= self._clock:
            self._ready_by_prio[prio - 1] -= 1
        else:
            self._delayed_live -= 1
        return True

    def clear(self) -> None:
        """Drop every job.  The clock is kept: time does not go back."""
        super().clear()
        self._ready.clear()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(aging_step_us={self._step}, "
            f"ready={sum(self._ready_by_prio)}, delayed={self._delayed_live})"
        )
