"""Batching that follows the load (dpq.cadence): pure, with the time passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dpq.cadence import Cadence


def test_a_lone_batch_on_an_idle_path_goes_at_once():
    cadence = Cadence()
    assert cadence.delay(100.0) == 0.0
    cadence.sent(100.0)
    # Long after: the rate has decayed to nothing, so no gap is kept.
    assert cadence.delay(200.0) == pytest.approx(0.0, abs=1e-12)


def test_the_gap_grows_with_the_rate_up_to_its_ceiling():
    cadence = Cadence(gap_per_rate_s=1e-4, max_gap_s=0.005, window_s=0.5)
    t = 0.0
    gaps = []
    for rate in (10, 40, 200):  # batches per second, sent for a few windows each
        for _ in range(int(rate * 2)):
            t += 1 / rate
            cadence.sent(t)
        gaps.append(cadence.gap(t))
        assert cadence.rate(t) == pytest.approx(rate, rel=0.15)
    assert gaps[0] < gaps[1] < gaps[2]
    assert gaps[0] == pytest.approx(10 * 1e-4, rel=0.15)
    assert gaps[2] == 0.005  # 200/s would ask for 20 ms: capped


def test_a_busy_path_settles_near_one_over_the_square_root_of_gap_per_rate():
    # Items always pending: each batch leaves as soon as the cadence allows.
    cadence = Cadence(gap_per_rate_s=1e-4, max_gap_s=1.0, window_s=0.5)
    t, sent = 0.0, 0
    while t < 10.0:
        t += max(cadence.delay(t), 1e-4)  # the round trip takes at least 0.1 ms
        cadence.sent(t)
        sent += 1
    assert cadence.rate(t) == pytest.approx(100, rel=0.1)  # not the 10,000/s the round trip allows
    assert sent < 10 * 150


@given(st.lists(st.floats(min_value=0.0, max_value=0.05), min_size=1, max_size=200))
def test_the_delay_never_exceeds_the_ceiling_nor_goes_negative(spacings):
    cadence = Cadence(max_gap_s=0.005)
    t = 0.0
    for spacing in spacings:
        t += spacing
        delay = cadence.delay(t)
        assert 0.0 <= delay <= 0.005 + 1e-12
        cadence.sent(t + delay)
        t += delay


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        Cadence(window_s=0)
    with pytest.raises(ValueError):
        Cadence(max_gap_s=-1)
