"""The compiled fair heap against its pure-Python twin, and both against the rules.

* ``FairMachine`` drives ``FairHeap`` and ``PyFairHeap`` with the same random
  operation sequences (hypothesis, stateful) and requires identical results,
  exceptions and messages, weights and clock included.
* ``test_one_tenant_orders_like_the_plain_heap``: with every job in one tenant
  both order exactly like ``PyHeap``.
* The direct tests pin what fairness promises: stride shares by weight, a small
  tenant is not stuck behind a big one, priority levels still come first, and
  tenants that are gone cost no memory.
"""

from __future__ import annotations

import random
import tracemalloc
from array import array

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import dpq._fastheap
from dpq._fastheap import FairHeap
from dpq.queue import fairheap
from dpq.queue.fairheap import STRIDE, TENANT_MAX, PyFairHeap
from dpq.queue.heap import PyHeap

IMPLS = [FairHeap, PyFairHeap]
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

small_ids = st.integers(0, 6) | st.integers(0, 24)
job_ids = small_ids | st.sampled_from([U64_MAX, -1, 2**64])
priorities = st.integers(1, 5) | st.sampled_from([0, 6])
tenants = st.integers(0, 3) | st.sampled_from([TENANT_MAX, TENANT_MAX + 1, -1])
weights = st.sampled_from([1, 2, 3, 7, 1000]) | st.sampled_from([0, 1001, -5])


class FairMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0

    @initialize(
        step=st.sampled_from([0, 1, 3, 10, 1000]),
        start=st.integers(0, 50),
        rebase=st.sampled_from([None, 0, STRIDE, 5 * STRIDE]),
    )
    def make(self, step, start, rebase):
        self.fast = FairHeap(step)
        self.twin = PyFairHeap(step)
        if rebase is not None:  # passes rebased often: the order must not notice
            self.fast._set_rebase_at(rebase)
        self.now = start

    def both(self, name, *args):
        got = outcome(getattr(self.fast, name), *args)
        want = outcome(getattr(self.twin, name), *args)
        assert got == want, f"{name}{args}: FairHeap {got} != PyFairHeap {want}"
        return got

    @rule(
        job_id=job_ids,
        priority=priorities,
        enq=st.integers(-20, 20),
        due=st.none() | st.integers(-10, 40),
        tenant=tenants,
    )
    def push(self, job_id, priority, enq, due, tenant):
        due = 0 if due is None else self.now + due
        self.both("push", job_id, priority, self.now + enq, due, tenant)

    @rule(
        job_id=small_ids,
        priority=st.integers(1, 5),
        when=st.sampled_from([2**63 - 1, 2**60 - 1, 2**60, -(2**60), -(2**63)]),
    )
    def push_extreme_time(self, job_id, priority, when):
        self.both("push", job_id, priority, when, when, job_id % 3)

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

    @rule(tenant=tenants, weight=weights)
    def set_weight(self, tenant, weight):
        self.both("set_weight", tenant, weight)

    @rule(tenant=tenants)
    def reset_weight(self, tenant):
        self.both("reset_weight", tenant)

    @rule(weight=weights)
    def set_default_weight(self, weight):
        self.both("set_default_weight", weight)

    @rule(delta=st.integers(-30, 60))
    def tick(self, delta):
        self.now += delta

    @rule()
    def counts(self):
        self.both("ready_count", self.now)
        self.both("delayed_count", self.now)
        self.both("ready_by_priority", self.now)
        self.both("ready_by_tenant", self.now)

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
        assert [i for i in range(25) if i in self.fast] == [i for i in range(25) if i in self.twin]
        assert self.fast.default_weight == self.twin.default_weight
        for tenant in range(4):
            assert self.fast.weight(tenant) == self.twin.weight(tenant)


TestFairMachine = FairMachine.TestCase
TestFairMachine.settings = settings(max_examples=300, stateful_step_count=80, deadline=None)
TestFairMachine.pytestmark = [pytest.mark.slow]


class GroupedFairMachine(FairMachine):
    """The same, with the compiled pick by level groups from 1-4 tenants on (16 by default),
    put up and taken down as tenants come and go."""

    @initialize(
        step=st.sampled_from([0, 1, 3, 10, 1000]),
        start=st.integers(0, 50),
        rebase=st.sampled_from([None, 0, STRIDE, 5 * STRIDE]),
        group_at=st.integers(1, 4),
    )
    def make(self, step, start, rebase, group_at):
        FairMachine.make(self, step, start, rebase)
        self.fast._set_group_at(group_at)

    @rule(group_at=st.integers(1, 5))
    def regroup(self, group_at):
        self.fast._set_group_at(group_at)


TestGroupedFairMachine = GroupedFairMachine.TestCase
TestGroupedFairMachine.settings = settings(max_examples=300, stateful_step_count=80, deadline=None)
TestGroupedFairMachine.pytestmark = [pytest.mark.slow]


# -- many tenants: the level groups against the twin --------------------------------


def drive_many(seed, tenants, step, ops, group_at=None):
    """Random pushes (mixed priorities, some delayed, some enqueued ahead of the clock),
    pops, removals, weights and clock moves on both heaps, a backlog of about two jobs
    per tenant throughout; every answer must agree."""
    rng = random.Random(seed)
    fast, twin = FairHeap(step), PyFairHeap(step)
    if group_at is not None:
        fast._set_group_at(group_at)
    unit = max(step, 1)
    now, next_id, live = 10 * unit, 0, []
    for t in rng.sample(range(tenants), tenants // 10):
        weight = rng.choice([1, 2, 5, 1000])
        for heap in (fast, twin):
            heap.set_weight(t, weight)

    def push():
        nonlocal next_id
        next_id += 1
        enq = now - rng.randint(0, 6 * unit)
        if rng.random() < 0.05:
            enq = now + rng.randint(1, 8 * unit)  # ahead of the clock: a level above 5
        due = now + rng.randint(1, 3 * unit) if rng.random() < 0.1 else 0
        args = (next_id, rng.randint(1, 5), enq, due, rng.randrange(tenants))
        assert outcome(fast.push, *args) == outcome(twin.push, *args)
        live.append(next_id)

    for _ in range(2 * tenants):
        push()
    for _ in range(ops):
        roll = rng.random()
        if roll < 0.45:
            push()
        elif roll < 0.8:
            assert fast.pop(now) == twin.pop(now)
        elif roll < 0.82:
            n = rng.randint(0, 10)
            assert list(fast.pop_many(n, now)) == list(twin.pop_many(n, now))
        elif roll < 0.9 and live:
            job_id = live.pop(rng.randrange(len(live)))
            assert fast.remove(job_id) == twin.remove(job_id)
        elif roll < 0.92:
            assert fast.peek(now) == twin.peek(now)
        else:
            now += rng.randint(0, unit)
    assert fast.ready_by_tenant(now) == twin.ready_by_tenant(now)
    assert len(fast) == len(twin) > tenants // 2
    end = now + 20 * unit
    assert list(fast.pop_many(len(twin), end)) == list(twin.pop_many(len(twin), end))
    assert len(fast) == 0 and fast.remembered_tenants() == 0


@pytest.mark.parametrize("step", [0, 1, 1000, 5_000_000])
def test_a_thousand_tenants_pick_like_the_twin(step):
    drive_many(seed=step, tenants=1_000, step=step, ops=1_500)


@pytest.mark.slow
@pytest.mark.parametrize("step", [0, 1, 1000, 5_000_000])
@pytest.mark.parametrize(("tenants", "ops"), [(1_000, 6_000), (5_000, 600)])
def test_many_tenants_pick_like_the_twin(step, tenants, ops):
    # the twin scans every backlogged tenant per pop: fewer operations with 5,000
    drive_many(seed=step + tenants, tenants=tenants, step=step, ops=ops)


@pytest.mark.parametrize("seed", range(4))
def test_groups_coming_and_going_pick_like_the_twin(seed):
    # few tenants around the threshold: the groups go up and down all the time
    drive_many(seed=seed, tenants=12, step=[0, 1, 10, 1000][seed], ops=6_000, group_at=6)


@pytest.mark.slow
def test_many_tenants_take_turns_at_each_level():
    # 1,000 tenants backlogged at every level; aging moves them down as the clock goes
    fast, twin = FairHeap(100), PyFairHeap(100)
    for heap in (fast, twin):
        for job_id in range(5_000):
            heap.push(job_id, job_id % 5 + 1, (job_id * 7) % 300, 0, job_id % 1_000)
    for now in range(300, 900, 25):
        assert list(fast.pop_many(200, now)) == list(twin.pop_many(200, now))


# -- one tenant: the plain heap's order -------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            st.integers(0, 30),
            st.integers(1, 5),
            st.integers(-20, 20),
            st.sampled_from([0, 0, 5, 30, 80]),
        ),
        st.tuples(st.just("pop")),
        st.tuples(st.just("pop_many"), st.integers(0, 5)),
        st.tuples(st.just("remove"), st.integers(0, 30)),
        st.tuples(st.just("tick"), st.integers(-5, 40)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(step=st.sampled_from([0, 1, 7, 100]), tenant=st.sampled_from([0, 9]), ops=ops)
def test_one_tenant_orders_like_the_plain_heap(step, tenant, ops):
    plain, fair, twin = PyHeap(step), FairHeap(step), PyFairHeap(step)
    now = 0
    for op in ops:
        if op[0] == "tick":
            now += op[1]
            continue
        if op[0] == "push":
            _, job_id, prio, enq, due = op
            want = outcome(plain.push, job_id, prio, now + enq, now + due if due else 0)
            for heap in (fair, twin):
                got = outcome(heap.push, job_id, prio, now + enq, now + due if due else 0, tenant)
                assert got == want
            continue
        name, *args = op
        args = [*args, now] if name != "remove" else args
        want = outcome(getattr(plain, name), *args)
        assert outcome(getattr(fair, name), *args) == want, op
        assert outcome(getattr(twin, name), *args) == want, op
    assert fair.ready_by_priority(now) == plain.ready_by_priority(now)


# -- what fairness promises --------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_weights_give_stride_shares(impl):
    heap = impl(5_000_000)
    heap.set_weight(1, 3)
    for i in range(6000):
        heap.push(i, 3, 1000, 0, 1)  # tenant 1, weight 3
        heap.push(100_000 + i, 3, 1000, 0, 2)  # tenant 2, weight 1
    served = [1 if job_id < 100_000 else 2 for job_id in heap.pop_many(8000, 2000)]
    # both stay backlogged all along: any 4k consecutive pops are 3k:k, give or take 1
    for k in (1, 2, 5, 25, 250, 1000, 2000):
        for start in range(0, len(served) - 4 * k + 1, max(1, k // 4)):
            ones = served[start : start + 4 * k].count(1)
            assert abs(ones - 3 * k) <= 1, (k, start, ones)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_small_tenant_is_not_stuck_behind_a_big_one(impl):
    heap = impl(5_000_000)
    for i in range(10_000):
        heap.push(i, 2, 1_000_000 + i, 0, 1)
    for i in range(50):
        heap.push(20_000 + i, 2, 2_000_000 + i, 0, 2)
    first = list(heap.pop_many(100, 3_000_000))
    assert sorted(j for j in first if j >= 20_000) == list(range(20_000, 20_050))
    assert first[:4] == [0, 20_000, 1, 20_001]  # turns, tie to the lower tenant id


@pytest.mark.parametrize("impl", IMPLS)
def test_a_weight_change_counts_from_the_next_turn(impl):
    heap = impl(0)
    for i in range(40):
        heap.push(i, 1, i, 0, 1)
        heap.push(100 + i, 1, i, 0, 2)
    before = [j < 100 for j in heap.pop_many(8, 0)]
    assert before.count(True) == 4
    heap.set_weight(2, 4)
    assert heap.weight(2) == 4 and heap.weight(1) == 1
    after = [j < 100 for j in heap.pop_many(20, 0)]
    assert after.count(True) == 4  # 4:1 from here on
    heap.reset_weight(2)
    assert heap.weight(2) == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_default_weight(impl):
    heap = impl(0)
    heap.set_default_weight(5)
    heap.set_weight(1, 1)
    assert (heap.default_weight, heap.weight(1), heap.weight(7)) == (5, 1, 5)
    for i in range(30):
        heap.push(i, 1, i, 0, 1)
        heap.push(100 + i, 1, i, 0, 7)
    assert [j >= 100 for j in heap.pop_many(12, 0)].count(True) == 10


@pytest.mark.parametrize("impl", IMPLS)
def test_priority_comes_before_turns(impl):
    heap = impl(0)  # strict priority: the level is the priority
    for i in range(20):
        heap.push(i, 2, i, 0, 1)
    heap.pop(100)  # tenant 1 had a turn: its pass is ahead
    heap.push(50, 1, 0, 0, 2)
    heap.push(51, 3, 0, 0, 2)
    assert heap.pop(100) == 50
    assert list(heap.pop_many(19, 100)) == list(range(1, 20))
    assert heap.pop(100) == 51


def level(job, now, step):
    prio, ready_at = job
    if step == 0:
        return prio
    return max(1, prio - (now - ready_at) // step)


@settings(max_examples=300, deadline=None)
@given(
    step=st.sampled_from([0, 1, 10, 100]),
    jobs=st.lists(
        st.tuples(st.integers(1, 5), st.integers(0, 300), st.sampled_from([0, 0, 100, 250])),
        max_size=40,
    ),
    tenant_of=st.lists(st.integers(0, 4), min_size=40, max_size=40),
    weight_of=st.lists(st.integers(1, 5), min_size=5, max_size=5),
    times=st.lists(st.integers(0, 600), max_size=20),
)
def test_a_more_urgent_level_is_never_served_later(step, jobs, tenant_of, weight_of, times):
    for impl in IMPLS:
        heap = impl(step)
        for tenant, weight in enumerate(weight_of):
            heap.set_weight(tenant, weight)
        info = {}
        for job_id, (prio, enq, due) in enumerate(jobs):
            heap.push(job_id, prio, enq, due, tenant_of[job_id])
            info[job_id] = (prio, max(enq, due), due)
        clock = 0
        for now in sorted(times):
            clock = max(clock, now)
            while (job_id := heap.pop(now)) is not None:
                got = level(info.pop(job_id)[:2], clock, step)
                ready = [level(j[:2], clock, step) for j in info.values() if j[2] <= clock]
                assert got <= min(ready, default=got), (impl, job_id)
                if len(info) % 3 == 0:
                    break  # leave some for later times


@pytest.mark.parametrize("impl", IMPLS)
def test_within_a_tenant_jobs_go_in_aging_key_order(impl):
    heap = impl(10)
    heap.push(1, 3, 0, 0, 1)  # key 20
    heap.push(2, 1, 5, 0, 1)  # key 5
    heap.push(3, 2, 0, 0, 1)  # key 10
    heap.push(4, 1, 30, 0, 1)  # key 30
    assert list(heap.pop_many(4, 100)) == [2, 3, 1, 4]


@pytest.mark.parametrize("impl", IMPLS)
def test_a_tenant_with_only_delayed_jobs_has_no_turn(impl):
    heap = impl(0)
    heap.push(1, 1, 0, 1000, 5)
    for i in range(10):
        heap.push(10 + i, 1, 0, 0, 6)
    assert heap.ready_by_tenant(0) == {6: 10}
    assert list(heap.pop_many(5, 0)) == [10, 11, 12, 13, 14]
    assert heap.ready_by_tenant(1000) == {5: 1, 6: 5}
    assert list(heap.pop_many(3, 1000)) == [1, 15, 16]  # joins at V, lower id first
    assert heap.delayed_count(1000) == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_a_returning_tenant_does_not_jump_ahead(impl):
    heap = impl(0)
    for i in range(10):
        heap.push(i, 1, 0, 0, 1)
        heap.push(100 + i, 1, 0, 0, 2)
    heap.push(200, 1, 0, 0, 3)
    assert list(heap.pop_many(3, 0)) == [0, 100, 200]  # tenant 3 is gone again
    assert list(heap.pop_many(4, 0)) == [1, 101, 2, 102]
    heap.push(201, 1, 0, 0, 3)  # back: one turn at V (the others are a turn ahead)
    heap.push(202, 1, 0, 0, 3)
    assert list(heap.pop_many(6, 0)) == [201, 3, 103, 202, 4, 104]


@pytest.mark.parametrize("impl", IMPLS)
def test_removal_moves_the_head(impl):
    heap = impl(0)
    for i in range(5):
        heap.push(i, 1, i, 0, 1)
        heap.push(10 + i, 1, i, 0, 2)
    assert heap.remove(0) and heap.remove(1) and heap.remove(14)
    assert not heap.remove(0)
    assert heap.peek(0) == 2
    assert list(heap.pop_many(10, 0)) == [2, 10, 3, 11, 4, 12, 13]
    assert heap.ready_by_tenant(0) == {}


# -- errors ------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_tenant_and_weight_name_value_and_limit(impl):
    heap = impl()
    for bad in (-1, 2**32, 2**70):
        with pytest.raises(ValueError, match=rf"tenant must be 0 to {TENANT_MAX}, got {bad}$"):
            heap.push(1, 1, 0, 0, bad)
        with pytest.raises(ValueError, match="tenant must be"):
            heap.set_weight(bad, 2)
    for bad in (0, 1001, -3, 2**70):
        with pytest.raises(ValueError, match=rf"weight must be 1 to 1000, got {bad}$"):
            heap.set_weight(1, bad)
        with pytest.raises(ValueError, match="weight must be"):
            heap.set_default_weight(bad)
    with pytest.raises(ValueError, match="priority must be 1"):
        heap.push(1, 6, 0, 0, 1)
    heap.push(1, 1, 0, 0, 1)
    with pytest.raises(ValueError, match="job id 1 is already in the heap"):
        heap.push(1, 1, 0, 0, 2)
    with pytest.raises(TypeError):
        heap.push(2, 1, 0, 0, 1.0)
    assert len(heap) == 1 and heap.ready_by_tenant(0) == {1: 1}
    assert heap.remembered_tenants() == 1  # the refused push left no record behind


def test_the_twins_agree_on_the_constants():
    for name in ("STRIDE", "TENANT_MAX", "WEIGHT_MIN", "WEIGHT_MAX"):
        assert getattr(dpq._fastheap, name) == getattr(fairheap, name), name


# -- memory ------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_tenants_that_are_gone_are_forgotten(impl):
    tenants = 10_000 if impl is FairHeap else 1_000  # the twin scans every tenant per pop
    heap = impl(5_000_000)
    for t in range(tenants):
        heap.push(t, 1, 0, 0, t + 1)
        heap.push(100_000 + t, 1, 0, 0, t + 1)
    assert heap.remembered_tenants() == tenants
    assert len(heap.pop_many(2 * tenants, 0)) == 2 * tenants
    assert heap.remembered_tenants() == 0


def test_tenants_are_forgotten_while_others_stay_busy():
    heap = FairHeap(5_000_000)
    for i in range(30_000):
        heap.push(i, 1, 0, 0, 0)  # keeps the busy period going throughout
    for t in range(1, 10_001):
        heap.push(100_000 + t, 1, 0, 0, t)
    assert len(heap.pop_many(25_000, 0)) == 25_000
    assert heap.ready_by_tenant(0) == {0: 15_000}
    assert heap.remembered_tenants() <= 1 + 64


def test_memory_is_given_back():
    tracemalloc.start()
    try:
        heap = FairHeap(5_000_000)
        base = tracemalloc.get_traced_memory()[0]
        for t in range(10_000):
            heap.push(t, 1, 0, 0, t)
            heap.push(50_000 + t, 2, 0, 10, t)  # delayed
        grown = tracemalloc.get_traced_memory()[0] - base
        assert grown > 20_000 * 24
        assert heap.__sizeof__() > 20_000 * 24
        heap.pop_many(100_000, 100)
        assert len(heap) == 0 and heap.remembered_tenants() == 0
        assert tracemalloc.get_traced_memory()[0] - base < 16 * 1024
        assert heap.__sizeof__() < 16 * 1024
    finally:
        tracemalloc.stop()


def test_removals_give_tenant_memory_back():
    heap, twin = FairHeap(0), PyFairHeap(0)
    for h in (heap, twin):
        for i in range(100_000):
            h.push(i, 1, 0, 0, i % 3)
        h.pop(0)
        for i in range(1, 99_990):
            assert h.remove(i)
    assert len(heap) == 10 and heap.ready_by_tenant(0) == {0: 4, 1: 3, 2: 3}
    assert heap.__sizeof__() < 64 * 1024
    assert list(heap.pop_many(10, 0)) == list(twin.pop_many(10, 0))


def test_repr():
    heap = FairHeap(7)
    heap.push(1, 1, 0, 0, 3)
    heap.push(2, 1, 0, 100, 4)
    assert repr(heap) == "FairHeap(aging_step_us=7, ready=1, delayed=1, tenants=1)"
    twin = PyFairHeap(7)
    twin.push(1, 1, 0, 0, 3)
    twin.push(2, 1, 0, 100, 4)
    assert repr(twin) == "PyFairHeap(aging_step_us=7, ready=1, delayed=1, tenants=1)"
