"""The compiled priority heap against its pure-Python twin, and both against the rules.

* ``HeapMachine`` drives ``FastHeap`` and ``PyHeap`` with the same random
  operation sequences (hypothesis, stateful) and requires identical results,
  identical exceptions and identical error messages.
* ``test_matches_brute_force`` checks both against a third, dumb model (sort
  everything that is due, every time), so a bug shared by the twins still fails.
* The direct tests pin the rules users rely on: the aging bound, strict mode,
  delayed jobs, removal, error messages, memory.
"""

from __future__ import annotations

import gc
import importlib.machinery
import sys
import tracemalloc
from array import array

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import dpq._fastheap
from dpq._fastheap import FastHeap
from dpq.queue import rules
from dpq.queue.heap import MAX_AGING_STEP_US, STRICT_MAX_US, STRICT_MIN_US, PyHeap

IMPLS = [FastHeap, PyHeap]
I64_MAX = 2**63 - 1
U64_MAX = 2**64 - 1


def outcome(fn, *args):
    """What a call did, in a form two implementations can be compared on."""
    try:
        result = fn(*args)
    except OverflowError:  # Cython words these itself; the type is the contract
        return ("raised", OverflowError)
    except (ValueError, TypeError) as exc:
        return ("raised", type(exc), str(exc))
    if isinstance(result, array):
        return ("array", result.typecode, result.tolist())
    return ("returned", result)


# -- the two implementations in lock step ---------------------------------------

small_ids = st.integers(0, 6) | st.integers(0, 24)  # often the same few: re-pushes, duplicates
job_ids = small_ids | st.sampled_from([U64_MAX, 2**63, -1, 2**64])
bad_priorities = st.sampled_from([0, 6, -1, 127, 2**70])
priorities = st.integers(1, 5) | bad_priorities
offsets = st.integers(-20, 20)
# rare extreme times: aging-key overflow, strict-mode range limits
extreme_times = st.sampled_from(
    [
        I64_MAX,
        I64_MAX - 3,
        STRICT_MIN_US,
        STRICT_MAX_US,
        STRICT_MIN_US - 1,
        STRICT_MAX_US + 1,
        -(2**63),
    ]
)
due_offsets = st.none() | st.integers(-10, 40)

# batches: mostly valid, ids from a wider range so only some collide with the heap;
# the push_many rule poisons at most one item
batch_items = st.lists(
    st.tuples(st.integers(0, 60), st.integers(1, 5), offsets, st.integers(-10, 40)),
    max_size=8,
    unique_by=lambda item: item[0],
)
poisons = st.sampled_from([None] * 6 + ["priority", "repeat", "extreme"])
# how a batch is handed over: in place (native formats), converted, or not contiguous
batch_kinds = st.sampled_from(["array", "memoryview", "list", "widths", "strided"])


def container(kind: str, values: list[int], typecode: str):
    if kind == "list":
        return list(values)
    if kind == "widths":  # other int formats take the copying path
        typecode = {"Q": "L", "q": "l", "b": "i"}[typecode]
    try:
        arr = array(typecode, values)
    except OverflowError:  # e.g. priority 2**70: hand it over as a list instead
        return list(values)
    if kind == "memoryview":
        return memoryview(arr)
    if kind == "strided":
        doubled = array(typecode, [v for v in values for _ in (0, 1)])
        return memoryview(doubled)[::2]
    return arr


class HeapMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0

    @initialize(step=st.sampled_from([0, 1, 3, 10, 1000]), start=st.integers(0, 50))
    def make(self, step: int, start: int) -> None:
        self.fast = FastHeap(step)
        self.twin = PyHeap(step)
        self.now = start

    def both(self, name: str, *args):
        got = outcome(getattr(self.fast, name), *args)
        want = outcome(getattr(self.twin, name), *args)
        assert got == want, f"{name}{args}: FastHeap {got} != PyHeap {want}"
        return got

    @rule(job_id=job_ids, priority=priorities, enq=offsets, due=due_offsets)
    def push(self, job_id, priority, enq, due):
        if due is None:
            self.both("push", job_id, priority, self.now + enq)
        else:
            self.both("push", job_id, priority, self.now + enq, self.now + due)

    @rule(job_id=small_ids, priority=st.integers(1, 5), when=extreme_times, due=st.booleans())
    def push_extreme_time(self, job_id, priority, when, due):
        # with due=when a negative time is the ready time, not max(when, 0)
        self.both("push", job_id, priority, when, *([when] if due else []))

    @rule(
        items=batch_items,
        kind=batch_kinds,
        with_due=st.booleans(),
        short=st.sampled_from([None] * 6 + [0, 1, 2, 3]),
        poison=poisons,
        where=st.integers(0, 7),
        bad_priority=bad_priorities,
        when=extreme_times,
    )
    def push_many(self, items, kind, with_due, short, poison, where, bad_priority, when):
        items = [list(item) for item in items]
        if items and poison:
            item = items[where % len(items)]
            if poison == "priority":
                item[1] = bad_priority
            elif poison == "repeat":
                item[0] = items[(where + 1) % len(items)][0]
            else:
                item[2] = when - self.now
        cols = [
            [i for i, _, _, _ in items],
            [p for _, p, _, _ in items],
            [self.now + e for _, _, e, _ in items],
            [self.now + d for _, _, _, d in items],
        ]
        if short is not None and items:  # one column too short
            cols[short] = cols[short][:-1]
        args = [
            container(kind, cols[0], "Q"),
            container(kind, cols[1], "b"),
            container(kind, cols[2], "q"),
        ]
        if with_due:
            args.append(container(kind, cols[3], "q"))
        result = self.both("push_many", *args)
        event(f"push_many of {min(len(items), 3)}+: {result[0]}")

    @rule()
    def pop(self):
        event(f"pop: {'job' if self.both('pop', self.now)[1] is not None else 'None'}")

    @rule(n=st.integers(-1, 10))
    def pop_many(self, n):
        self.both("pop_many", n, self.now)

    @rule()
    def peek(self):
        self.both("peek", self.now)

    @rule(job_id=job_ids)
    def remove(self, job_id):
        self.both("remove", job_id)

    @rule(job_id=job_ids | st.sampled_from(["7", 7.0, None]))
    def contains(self, job_id):
        assert (job_id in self.fast) == (job_id in self.twin)

    @rule(delta=st.integers(-30, 60))
    def tick(self, delta):  # time mostly advances, sometimes goes back
        self.now += delta

    @rule()
    def counts(self):
        self.both("ready_count", self.now)
        self.both("delayed_count", self.now)
        self.both("ready_by_priority", self.now)

    @rule(roll=st.integers(0, 9))
    def clear(self, roll):
        if roll == 0:
            self.both("clear")

    @invariant()
    def same_contents(self):
        if not hasattr(self, "fast"):
            return
        assert len(self.fast) == len(self.twin)
        assert self.fast.next_due_us() == self.twin.next_due_us()
        members = [i for i in range(61) if i in self.fast]
        assert members == [i for i in range(61) if i in self.twin]
        assert (U64_MAX in self.fast) == (U64_MAX in self.twin)


TestHeapMachine = HeapMachine.TestCase
TestHeapMachine.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestHeapMachine.pytestmark = [pytest.mark.slow]  # a long stateful run


# -- both against a brute-force model ------------------------------------------


def brute_force_pops(jobs, step, pop_times):
    """Serve ``jobs`` by re-sorting everything that is due before every pop."""
    waiting = list(enumerate(jobs))  # (push index, (id, prio, enq, due))
    clock, out = 0, []
    for now in pop_times:
        clock = max(clock, now)
        due = [(i, job) for i, job in waiting if job[3] <= clock]
        if not due:
            out.append(None)
            continue

        def order(entry):
            i, (_, prio, enq, d) = entry
            ready_at = max(enq, d)
            return ((prio, ready_at) if step == 0 else (ready_at + (prio - 1) * step,), i)

        best = min(due, key=order)
        waiting.remove(best)
        out.append(best[1][0])
    return out


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(
    step=st.sampled_from([0, 1, 5, 100]),
    jobs=st.lists(
        st.tuples(st.integers(1, 5), st.integers(0, 200), st.sampled_from([0, 0, 50, 120, 300])),
        max_size=40,
    ),
    pop_times=st.lists(st.integers(0, 400), max_size=50),
)
def test_matches_brute_force(step, jobs, pop_times):
    jobs = [(job_id, *job) for job_id, job in enumerate(jobs)]
    want = brute_force_pops(jobs, step, pop_times)
    for impl in IMPLS:
        heap = impl(step)
        for job in jobs:
            heap.push(*job)
        assert [heap.pop(t) for t in pop_times] == want, impl.__name__


@settings(max_examples=200, deadline=None)
@given(
    step=st.sampled_from([0, 7, 1000]),
    jobs=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 10**6)), max_size=200),
)
def test_batch_and_per_item_agree(step, jobs):
    one, batch = FastHeap(step), FastHeap(step)
    for job_id, (prio, enq) in enumerate(jobs):
        one.push(job_id, prio, enq)
    batch.push_many(
        array("Q", range(len(jobs))),
        array("b", [p for p, _ in jobs]),
        array("q", [e for _, e in jobs]),
    )
    drained = [one.pop(10**7) for _ in jobs]
    assert batch.pop_many(len(jobs) + 5, 10**7).tolist() == drained


# -- the extension really is compiled ---------------------------------------------


def test_extension_is_compiled():
    # No silent fallback: the heap every node serves from is the C one.
    assert dpq._fastheap.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), (
        dpq._fastheap.__file__
    )
    assert type(FastHeap.push).__name__ != "function"


# -- ordering ------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_aging_bound(impl):
    # A priority-5 job enqueued at t beats a priority-1 job enqueued after
    # t + 4 * step, loses to one enqueued before, and at exactly t + 4 * step
    # the keys tie and push order decides.
    step, t = 1_000, 50_000
    for p1_at, want in [
        (t + 4 * step + 1, [5, 1]),
        (t + 4 * step - 1, [1, 5]),
        (t + 4 * step, [5, 1]),
    ]:
        heap = impl(step)
        heap.push(5, 5, t)
        heap.push(1, 1, p1_at)
        assert heap.pop_many(2, 10**9).tolist() == want, p1_at


@pytest.mark.parametrize("impl", IMPLS)
def test_aging_interleaves_a_long_queue(impl):
    # Under a steady stream of urgent jobs a waiting low-priority job still
    # gets out after about 4 steps of waiting.
    step = 10
    heap = impl(step)
    heap.push(999, 5, 0)
    for i in range(100):
        heap.push(i, 1, i)  # one urgent job per microsecond
    order = heap.pop_many(101, 1_000).tolist()
    # urgent jobs enqueued at 0..39 go first; at 40 the keys tie and 999 was pushed first
    assert order.index(999) == 40


@pytest.mark.parametrize("impl", IMPLS)
def test_strict_priority_with_step_zero(impl):
    heap = impl(0)
    heap.push(1, 5, 0)
    heap.push(2, 3, 10)
    heap.push(3, 1, 10**15)  # enqueued far later, still first
    heap.push(4, 3, 5)  # same priority as job 2 but ready earlier
    heap.push(5, 3, 5)  # tie with job 4: push order
    assert heap.pop_many(10, 10**16).tolist() == [3, 4, 5, 2, 1]


@pytest.mark.parametrize("impl", IMPLS)
def test_strict_priority_across_its_whole_time_range(impl):
    heap = impl(0)
    low = (STRICT_MIN_US, STRICT_MIN_US)  # due too, or max(enqueued, due=0) would be 0
    heap.push(1, 2, *low)
    heap.push(2, 1, STRICT_MAX_US)
    heap.push(3, 5, *low)
    heap.push(4, 4, STRICT_MAX_US)
    assert heap.pop_many(4, STRICT_MAX_US).tolist() == [2, 1, 4, 3]


@pytest.mark.parametrize("impl", IMPLS)
def test_fifo_within_priority(impl):
    heap = impl(1_000)
    for job_id in range(50):
        heap.push(job_id, 3, 100)  # same key: push order
    assert heap.pop_many(50, 100).tolist() == list(range(50))


# -- delayed jobs ----------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_delayed_job_is_never_popped_early(impl):
    heap = impl(10)
    heap.push(1, 1, 0, due_at_us=100)
    heap.push(2, 5, 0)
    assert heap.next_due_us() == 100
    assert heap.pop(99) == 2
    assert heap.pop(99) is None
    assert heap.peek(99) is None
    assert (heap.ready_count(99), heap.delayed_count(99), len(heap)) == (0, 1, 1)
    assert heap.peek(100) == 1
    assert heap.pop(100) == 1
    assert heap.next_due_us() is None
    assert len(heap) == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_aging_clock_of_a_delayed_job_starts_when_due(impl):
    # A priority-1 job due at 100 ranks as if enqueued at 100: behind a
    # priority-2 job enqueued at 0 with step 50 (key 50 < 100).
    heap = impl(50)
    heap.push(1, 1, 0, due_at_us=100)
    heap.push(2, 2, 0)
    assert heap.pop_many(2, 1_000).tolist() == [2, 1]


@pytest.mark.parametrize("impl", IMPLS)
def test_promotion_is_monotonic(impl):
    heap = impl(10)
    heap.push(1, 1, 0, due_at_us=100)
    assert heap.ready_count(150) == 1
    # an earlier now_us later on (clock skew between callers) does not hide it again
    assert heap.ready_count(50) == 1
    assert heap.delayed_count(50) == 0
    assert heap.pop(50) == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_push_due_before_the_clock_is_ready_at_once(impl):
    heap = impl(10)
    heap.pop(1_000)  # the clock is now 1000
    heap.push(1, 1, 0, due_at_us=500)
    assert heap.next_due_us() is None
    assert heap.ready_count(0) == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_next_due_us(impl):
    heap = impl(10)
    assert heap.next_due_us() is None
    heap.push(1, 1, 0, due_at_us=300)
    heap.push(2, 1, 0, due_at_us=200)
    heap.push(3, 1, 0, due_at_us=400)
    assert heap.next_due_us() == 200
    assert heap.remove(2)
    assert heap.next_due_us() == 300  # a removed job does not wake anyone
    assert heap.pop(300) == 1
    assert heap.next_due_us() == 400
    heap.clear()
    assert heap.next_due_us() is None


# -- removal and counts ------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_remove_ready_and_delayed(impl):
    heap = impl(10)
    heap.push(1, 1, 0)
    heap.push(2, 2, 0)
    heap.push(3, 3, 0, due_at_us=100)
    assert heap.ready_by_priority(0) == (1, 1, 0, 0, 0)
    assert heap.remove(1) and heap.remove(3)
    assert not heap.remove(1) and not heap.remove(42)
    assert 1 not in heap and 3 not in heap and 2 in heap
    assert heap.ready_by_priority(1_000) == (0, 1, 0, 0, 0)
    assert (heap.ready_count(1_000), heap.delayed_count(1_000), len(heap)) == (1, 0, 1)
    assert heap.peek(1_000) == 2
    assert heap.pop_many(5, 1_000).tolist() == [2]


@pytest.mark.parametrize("impl", IMPLS)
def test_removed_id_can_come_back(impl):
    # The old entry left in the heap must not come back to life with the new one.
    heap = impl(10)
    heap.push(7, 5, 0)
    heap.push(8, 3, 0)
    assert heap.remove(7)
    heap.push(7, 1, 1_000)  # same id, new job: key 1000 > 20
    assert heap.pop_many(5, 10_000).tolist() == [8, 7]
    assert heap.pop(10_000) is None and len(heap) == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_removed_delayed_id_can_come_back(impl):
    # The delayed entry of the removed job must stay dead when its due time
    # comes, even though a new job now holds its id.
    heap = impl(10)
    heap.push(7, 1, 0, due_at_us=100)
    assert heap.remove(7)
    heap.push(7, 5, 0, due_at_us=500)
    assert heap.pop(200) is None
    assert (heap.ready_count(200), heap.delayed_count(200), heap.next_due_us()) == (0, 1, 500)
    assert heap.pop(500) == 7 and len(heap) == 0


def test_many_removals_match_the_twin():
    # Enough tombstones to make FastHeap sweep them out more than once.
    fast, twin = FastHeap(25), PyHeap(25)
    for heap in (fast, twin):
        for i in range(6_000):
            heap.push(i, i % 5 + 1, (i * 7919) % 3_000, (i * 104_729) % 6_000 if i % 3 else 0)
    for i in range(0, 6_000, 7):
        assert fast.remove(i) == twin.remove(i)
    for i in list(range(1, 6_000, 2)) + list(range(0, 6_000, 4)):
        assert fast.remove(i) == twin.remove(i)
    assert len(fast) == len(twin)
    for now in (1_000, 2_000, 2_500, 4_000, 7_000):
        assert fast.ready_by_priority(now) == twin.ready_by_priority(now)
        assert fast.next_due_us() == twin.next_due_us()
        assert fast.pop_many(97, now).tolist() == twin.pop_many(97, now).tolist()
    assert fast.pop_many(10_000, 10_000).tolist() == twin.pop_many(10_000, 10_000).tolist()
    assert len(fast) == len(twin) == 0


@pytest.mark.parametrize(
    "make_id",
    [lambda i: i, lambda i: 8 * i, lambda i: i << 40, lambda i: (i * 0x9E3779B97F4A7C15) % 2**64],
    ids=["consecutive", "stride-8", "high-bits", "scattered"],
)
def test_id_patterns_match_the_twin(make_id):
    # The id table keeps runs of consecutive ids together; other id shapes
    # must work just as well (and removals must not lose neighbours).
    fast, twin = FastHeap(3), PyHeap(3)
    ids = [make_id(i) for i in range(20_000)]
    for heap in (fast, twin):
        heap.push_many(
            array("Q", ids),
            array("b", [i % 5 + 1 for i in range(20_000)]),
            array("q", range(20_000)),
        )
    for job_id in ids[::3]:
        assert fast.remove(job_id) and twin.remove(job_id)
    assert all((job_id in fast) == (job_id in twin) for job_id in ids)
    assert fast.pop_many(30_000, 10**6).tolist() == twin.pop_many(30_000, 10**6).tolist()


@pytest.mark.parametrize("impl", IMPLS)
def test_len_contains_and_big_ids(impl):
    heap = impl()
    assert len(heap) == 0 and not heap
    heap.push(U64_MAX, 2, 0)
    heap.push(0, 2, 0, due_at_us=10**12)
    assert len(heap) == 2 and U64_MAX in heap and 0 in heap
    assert -1 not in heap and 2**64 not in heap and "x" not in heap and 0.0 not in heap
    assert heap.pop(0) == U64_MAX
    assert heap.pop(0) is None


# -- batches -----------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "make",
    [
        lambda ids, ps, ts: (array("Q", ids), array("b", ps), array("q", ts)),
        lambda ids, ps, ts: (array("Q", ids), array("q", ps), array("q", ts)),
        lambda ids, ps, ts: (array("L", ids), array("B", ps), array("i", ts)),
        lambda ids, ps, ts: (
            memoryview(array("Q", ids)),
            memoryview(array("b", ps)),
            array("q", ts),
        ),
        lambda ids, ps, ts: (list(ids), tuple(ps), range(0, 3 * len(ts), 3)),
        lambda ids, ps, ts: (
            memoryview(array("Q", [x for x in ids for _ in (0, 1)]))[::2],
            array("b", ps),
            array("q", ts),
        ),
    ],
    ids=["native", "q-priorities", "other-widths", "memoryview", "sequences", "strided"],
)
def test_push_many_accepts_array_likes(impl, make):
    ids, ps, ts = [5, 6, 7, 8], [3, 1, 3, 2], [0, 3, 6, 9]
    heap = impl(0)
    heap.push_many(*make(ids, ps, ts))
    out = heap.pop_many(10, 100)
    assert type(out) is array and out.typecode == "Q"
    assert out.tolist() == [6, 8, 5, 7]


@pytest.mark.parametrize("impl", IMPLS)
def test_push_many_with_due_times(impl):
    heap = impl(10)
    heap.push_many(
        array("Q", [1, 2, 3]), array("b", [1, 1, 1]), array("q", [0, 0, 0]), array("q", [0, 50, 20])
    )
    assert heap.next_due_us() == 20
    assert heap.pop_many(5, 30).tolist() == [1, 3]
    assert heap.pop_many(5, 60).tolist() == [2]


@pytest.mark.parametrize("impl", IMPLS)
def test_pop_many_edges(impl):
    heap = impl()
    assert heap.pop_many(0, 0).tolist() == []
    assert heap.pop_many(5, 0).tolist() == []
    heap.push(1, 1, 0)
    assert heap.pop_many(0, 0).tolist() == [] and len(heap) == 1


# -- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad", [0, 6, -1, 10**30])
def test_bad_priority_names_value_and_range(impl, bad):
    heap = impl()
    with pytest.raises(ValueError) as err:
        heap.push(1, bad, 0)
    assert f"got {bad}" in str(err.value)
    assert "1 (most urgent) to 5 (least urgent)" in str(err.value)
    assert len(heap) == 0 and 1 not in heap


@pytest.mark.parametrize("impl", IMPLS)
def test_duplicate_id_is_refused(impl):
    heap = impl()
    heap.push(7, 1, 0)
    heap.push(8, 1, 0, due_at_us=10**9)
    for job_id in (7, 8):  # ready and delayed alike
        with pytest.raises(ValueError, match=f"job id {job_id} is already in the heap"):
            heap.push(job_id, 2, 5)
    assert heap.ready_by_priority(0) == (1, 0, 0, 0, 0) and len(heap) == 2


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "ids, prios, message",
    [
        ([10, 11, 12], [1, 9, 1], r"priorities\[1\]: .*got 9"),
        ([10, 11, 10], [1, 2, 3], r"job_ids\[2\]: job id 10 repeats job_ids\[0\]"),
        ([10, 1, 12], [1, 2, 3], r"job_ids\[1\]: job id 1 is already in the heap"),
        ([10, 11, 12], [1, 2], r"same length, got 3, 2, 3"),
    ],
)
def test_a_bad_item_refuses_the_whole_batch(impl, ids, prios, message):
    heap = impl(10)
    heap.push(1, 1, 0)
    with pytest.raises(ValueError, match=message):
        heap.push_many(array("Q", ids), array("b", prios), array("q", [0, 0, 0]))
    assert len(heap) == 1
    assert not any(i in heap for i in (10, 11, 12))
    assert heap.ready_by_priority(0) == (1, 0, 0, 0, 0)
    heap.push_many(array("Q", [10, 11]), array("b", [2, 2]), array("q", [0, 0]))  # still usable
    assert heap.pop_many(5, 0).tolist() == [1, 10, 11]


@pytest.mark.parametrize("impl", IMPLS)
def test_key_overflow_is_refused(impl):
    heap = impl(1_000)
    heap.push(1, 1, I64_MAX)  # priority 1: no offset, fits
    with pytest.raises(ValueError, match="aging key overflows int64"):
        heap.push(2, 2, I64_MAX - 999)
    strict = impl(0)
    with pytest.raises(ValueError, match=f"must be .* to {STRICT_MAX_US}"):
        strict.push(2, 2, STRICT_MAX_US + 1)
    assert len(heap) == 1 and len(strict) == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_arguments(impl):
    for step in (-1, MAX_AGING_STEP_US + 1):
        with pytest.raises(
            ValueError, match=f"aging_step_us must be 0 to {MAX_AGING_STEP_US}.* got {step}"
        ):
            impl(step)
    heap = impl()
    with pytest.raises(ValueError, match="n must be >= 0, got -1"):
        heap.pop_many(-1, 0)
    with pytest.raises(TypeError):
        heap.push(1.0, 1, 0)  # ids and times are ints, never truncated floats
    with pytest.raises(TypeError):
        heap.pop(1.5)
    with pytest.raises(OverflowError):
        heap.push(-1, 1, 0)
    assert impl(0).aging_step_us == 0


# -- memory ---------------------------------------------------------------------------


def test_removals_give_memory_back():
    # Tombstones are swept out once they outnumber live jobs, and the arrays shrink.
    n = 100_000
    heap = FastHeap()
    heap.push_many(array("Q", range(n)), array("b", [3]) * n, array("q", range(n)))
    full = sys.getsizeof(heap)
    for job_id in range(n):
        if job_id % 10:
            heap.remove(job_id)
    assert len(heap) == n // 10
    assert sys.getsizeof(heap) < 0.4 * full, (sys.getsizeof(heap), full)
    assert heap.pop_many(n, n).tolist() == list(range(0, n, 10))


def test_memory_grows_for_a_million_jobs_and_is_given_back():
    n = 1_000_000
    ids, prios, times = (
        array("Q", range(n)),
        array("b", [1, 2, 3, 4, 5]) * (n // 5),
        array("q", range(n)),
    )
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        heap = FastHeap()
        heap.push_many(ids, prios, times)
        grown = tracemalloc.get_traced_memory()[0] - base
        # 24-byte heap entries plus 16-byte table slots at most half full
        assert grown >= n * (24 + 2 * 16), grown
        assert sys.getsizeof(heap) >= n * (24 + 2 * 16)
        assert len(heap) == n and heap.ready_count(0) == n

        heap.clear()
        assert len(heap) == 0 and heap.pop(n) is None
        assert tracemalloc.get_traced_memory()[0] - base < 64 * 1024
        assert sys.getsizeof(heap) < 64 * 1024

        heap.push_many(ids, prios, times)  # usable after clear; draining also hands memory back
        assert len(heap.pop_many(n, n)) == n and len(heap) == 0
        assert tracemalloc.get_traced_memory()[0] - base < 1024 * 1024

        heap.push_many(ids, prios, times)
        del heap  # __dealloc__ frees everything
        gc.collect()
        assert tracemalloc.get_traced_memory()[0] - base < 64 * 1024
    finally:
        tracemalloc.stop()


def test_the_compiled_heap_has_the_priority_bounds_of_the_queue_rules():
    # _fastheap compiles its own copy of the bounds; the state machine's rules own them
    assert (dpq._fastheap.PRIORITY_MIN, dpq._fastheap.PRIORITY_MAX) == (
        rules.PRIORITY_MIN, rules.PRIORITY_MAX)
