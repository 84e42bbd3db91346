"""The health → weight formula, in the scenarios a gateway operator cares about."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpq._wrr import SmoothWRR
from dpq.gateway.balancer import SCALE, BalancerPolicy, NodeHealth, weight, weights

IDLE = NodeHealth(node_id=1, cpu_percent=10.0, ready_depth=0, consume_rate=100.0)

healths = st.builds(
    NodeHealth,
    node_id=st.integers(0, 10),
    reachable=st.booleans(),
    cpu_percent=st.floats(-10, 150, allow_nan=False),
    ready_depth=st.integers(-5, 10**7),
    consume_rate=st.floats(-1, 1e6, allow_nan=False),
    waiting_consumers=st.integers(-2, 100),
)


def test_a_node_at_full_cpu_gets_less():
    assert weight(replace(IDLE, cpu_percent=100.0)) < weight(replace(IDLE, cpu_percent=50.0))
    assert weight(replace(IDLE, cpu_percent=50.0)) < weight(IDLE)


def test_a_deep_queue_relative_to_consume_rate_gets_less():
    fast = replace(IDLE, ready_depth=1000, consume_rate=10_000.0)  # drains in 0.1 s
    slow = replace(IDLE, ready_depth=1000, consume_rate=100.0)  # drains in 10 s
    stuck = replace(IDLE, ready_depth=1000, consume_rate=0.0)  # nobody consumes
    assert weight(IDLE) > weight(fast) > weight(slow) > weight(stuck) >= 1


def test_idle_consumers_waiting_get_more():
    assert weight(replace(IDLE, waiting_consumers=4)) > weight(replace(IDLE, waiting_consumers=1))
    assert weight(replace(IDLE, waiting_consumers=1)) > weight(IDLE)
    # past the cap, more parked long-polls add nothing
    cap = BalancerPolicy().waiting_cap
    assert weight(replace(IDLE, waiting_consumers=cap)) == weight(
        replace(IDLE, waiting_consumers=cap * 10)
    )


def test_an_unreachable_node_gets_zero_and_is_never_picked():
    down = replace(IDLE, node_id=2, reachable=False, waiting_consumers=8)
    assert weight(down) == 0
    ids, ws = weights([down, IDLE, replace(IDLE, node_id=3)])
    assert ids == [1, 2, 3] and ws[1] == 0
    assert 2 not in set(SmoothWRR(ids, ws).pick_many(1000))


def test_share_of_picks_follows_health():
    # consumers wait on node 2; node 3 is saturated: node 2 takes most new jobs
    reports = [
        replace(IDLE, node_id=1),
        replace(IDLE, node_id=2, waiting_consumers=6),
        replace(IDLE, node_id=3, cpu_percent=98.0, ready_depth=50_000, consume_rate=500.0),
    ]
    picks = list(SmoothWRR(*weights(reports)).pick_many(10_000))
    share = {n: picks.count(n) / len(picks) for n in (1, 2, 3)}
    assert share[2] > 0.6 and share[3] < 0.02 and share[2] > share[1] > share[3]


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(healths)
def test_weight_is_bounded_and_zero_only_when_unreachable(h):
    w = weight(h)
    assert isinstance(w, int)
    assert (w == 0) == (not h.reachable)
    assert w <= SCALE * (1 + 0.5 * 8)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(healths, st.floats(0, 100), st.integers(0, 10**6), st.integers(0, 20))
def test_weight_is_monotonic_in_each_input(h, more_cpu, more_depth, more_waiting):
    h = replace(h, reachable=True)
    assert weight(replace(h, cpu_percent=h.cpu_percent + more_cpu)) <= weight(h)
    assert weight(replace(h, ready_depth=max(h.ready_depth, 0) + more_depth)) <= weight(
        replace(h, ready_depth=max(h.ready_depth, 0))
    )
    waiting = max(h.waiting_consumers, 0)
    assert (weight(replace(h, waiting_consumers=waiting + more_waiting))
            >= weight(replace(h, waiting_consumers=waiting)))
