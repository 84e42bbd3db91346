"""Queue settings on the state machine: in-flight and rate limits, max attempts,
fairness keys, and their place in snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.commands import (
    Log,
    ack,
    enqueue,
    expire,
    grants,
    lease,
    nack,
    queue_config,
    reassign,
)

from dpq.queue import limits, snapshot
from dpq.queue.limits import QueueSettings
from dpq.queue.results import Configured, Refused
from dpq.queue.state import JobState
from dpq.v1 import queue_pb2

DATA = Path(__file__).parent / "data"
MEMBERS = frozenset({1, 2, 3})


def _jobs(log, n, queue="q", at_ms=0, **fields):
    log.run(at_ms, enqueue(*[queue_pb2.NewJob(queue=queue, priority=3, payload=b"x", **fields)
                            for _ in range(n)]))


def test_max_in_flight_grants_only_up_to_the_limit_over_every_node():
    log = Log()
    log.run(0, queue_config(max_in_flight=3))
    _jobs(log, 10)
    for node in (2, 3):  # jobs 6..10 move to other nodes: the limit is the queue's
        log.run(0, reassign(
            [i for i in range(1, 11) if i % 3 == node - 1], [node] * 10))
    granted = []
    for node in (1, 2, 3):
        owned = [j.job_id for j in log.state.jobs.values() if j.owner == node]
        granted += grants(log.run(1, lease(*owned, node=node)))
    assert len(granted) == 3 and log.state.counts["q"].leased == 3
    assert log.state.lease_allowance("q", 1_000) == 0
    # an ack frees one place, and only one more is granted
    g = granted[0]
    log.run(2, ack((g.job_id, g.attempt)))
    assert log.state.lease_allowance("q", 2_000) == 1
    ready = [j.job_id for j in log.state.jobs.values() if j.state == JobState.READY
             and j.owner == 1]
    more = [j.job_id for j in log.state.jobs.values() if j.state == JobState.READY
            and j.owner == 2]
    again = grants(log.run(3, lease(*ready, node=1))) + grants(log.run(3, lease(*more, node=2)))
    assert len(again) == 1


def test_an_expired_lease_counts_until_its_expire_is_applied():
    log = Log()
    log.run(0, queue_config(max_in_flight=1))
    _jobs(log, 2)
    [g] = grants(log.run(1, lease(1, 2, lease_ms=10)))
    assert grants(log.run(100, lease(2))) == []  # ran out by time, but not released yet
    log.run(101, expire((g.job_id, g.attempt)))
    assert len(grants(log.run(102, lease(2)))) == 1


def test_the_rate_limit_is_a_token_bucket_on_the_leader_clock():
    log = Log()
    log.run(0, queue_config(max_rate_per_s=10.0, burst=5))
    _jobs(log, 200)
    assert len(grants(log.run(0, lease(*range(1, 51))))) == 5  # the full bucket
    assert grants(log.run(50, lease(*range(6, 51)))) == []  # 0.5 tokens in 50 ms
    assert len(grants(log.run(100, lease(*range(6, 51))))) == 1
    # over 10 s, at most burst + rate * 10 s, however often it is asked
    total, now = 6, 100
    while now < 10_100:
        now += 7
        ids = [j.job_id for j in log.state.jobs.values() if j.state == JobState.READY][:10]
        total += len(grants(log.run(now, lease(*ids))))
    assert 100 <= total <= 5 + 10 * 10 + 1


@settings(max_examples=60, deadline=None)
@given(rate=st.integers(1, 500), burst=st.integers(0, 50),
       asks=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 8)), min_size=1,
                     max_size=60))
def test_no_window_gets_more_than_burst_plus_rate_times_its_length(rate, burst, asks):
    log = Log()
    log.run(0, queue_config(max_rate_per_s=float(rate), burst=burst))
    _jobs(log, sum(n for _, n in asks))
    size = log.state.configs["q"].bucket_size // limits.JOB
    now, times = 0, []
    for dt, n in asks:
        now += dt
        ids = [j.job_id for j in log.state.jobs.values() if j.state == JobState.READY][:n]
        times += [now] * len(grants(log.run(now, lease(*ids))))
    for i, start in enumerate(times):  # every window that starts at a grant
        for end in times[i:]:
            in_window = sum(1 for t in times if start <= t <= end)
            assert in_window <= size + rate * (end - start) / 1000 + 1e-9


def test_limits_are_per_queue_and_leave_other_queues_alone():
    log = Log()
    log.run(0, queue_config("slow", max_in_flight=1, max_rate_per_s=1.0))
    _jobs(log, 3, queue="slow")
    _jobs(log, 3, queue="fast")
    assert len(grants(log.run(1, lease(1, 2, 3)))) == 1
    assert len(grants(log.run(1, lease(4, 5, 6)))) == 3


def test_settings_merge_field_by_field_and_clear_with_zero():
    log = Log()
    [c] = log.run(0, queue_config(max_in_flight=5, max_rate_per_s=200.0,
                                  fairness_weights={"a": 3, "b": 2}))
    assert isinstance(c, Configured)
    log.run(1, queue_config(max_attempts=7, fairness_weights={"b": 0, "c": 1}))
    config = log.state.configs["q"].to_pb("q")
    assert (config.max_in_flight, config.max_rate_per_s, config.max_attempts) == (5, 200.0, 7)
    assert [(w.key, w.weight) for w in config.fairness_weights] == [("a", 3), ("c", 1)]
    assert config.slot == 2
    log.run(2, queue_config(max_in_flight=0, max_rate_per_s=0.0, max_attempts=0,
                            replace_fairness_weights=True))
    assert "q" not in log.state.configs  # nothing set: no settings kept
    assert log.state.lease_allowance("q", 0) == -1


def test_a_queue_max_attempts_overrides_the_proposers():
    log = Log()
    log.run(0, queue_config(max_attempts=1))
    _jobs(log, 2)
    assert len(grants(log.run(1, lease(1, 2, lease_ms=1)))) == 2
    log.run(5, nack((1, 1), max_attempts=5), expire((2, 1), max_attempts=5))
    assert log.state.jobs[1].state == JobState.DEAD and log.state.jobs[2].state == JobState.DEAD


def test_bad_settings_in_the_log_are_refused_and_change_nothing():
    log = Log()
    for bad in ({"max_rate_per_s": float("nan")}, {"max_rate_per_s": -1.0},
                {"max_in_flight": limits.MAX_IN_FLIGHT + 1},
                {"fairness_weights": {"a": limits.MAX_WEIGHT + 1}},
                {"max_attempts": limits.MAX_ATTEMPTS + 1}):
        [result] = log.run(0, queue_config(**bad))
        assert isinstance(result, Refused), bad
        field = next(iter(bad))
        assert field in result.detail
    assert log.state.configs == {}
    [result] = log.run(0, queue_config("not a name", max_in_flight=1))
    assert isinstance(result, Refused) and "not a queue name" in result.detail


def test_fairness_keys_and_settings_survive_a_snapshot_with_the_bucket_level():
    log = Log()
    log.run(0, queue_config(max_rate_per_s=10.0, burst=4, fairness_weights={"t": 2}))
    _jobs(log, 3, fairness_key="tenant-a")
    assert len(grants(log.run(0, lease(1, 2)))) == 2  # two tokens spent
    again = snapshot.load(snapshot.dump(log.state), members=MEMBERS)
    assert again.jobs == log.state.jobs and again.jobs[3].fairness_key == "tenant-a"
    assert again.configs == log.state.configs and again.configs["q"].tokens == 2 * limits.JOB
    assert again.held_bytes == log.state.held_bytes


def test_a_version_4_snapshot_still_loads_without_fairness_keys_or_settings():
    # Written by version 4: jobs 1 (p2, dedup key k1, owner 1) and 2 (p5, owner 2) of
    # queue q, enqueued at 1 s; q paused at 2 s.
    v4 = (DATA / "snapshot-v4.bin").read_bytes()
    assert v4[4:6] == b"\x04\x00"
    state = snapshot.load(v4, members=MEMBERS)
    assert [(j.job_id, j.priority, j.payload, j.owner, j.dedup_key, j.fairness_key)
            for j in state.jobs.values()] == [(1, 2, b"a", 1, "k1", ""), (2, 5, b"bb", 2, "", "")]
    assert state.paused == {"q": 0} and state.configs == {}
    assert snapshot.load(snapshot.dump(state), members=MEMBERS).jobs == state.jobs


@pytest.mark.parametrize("data", [
    {"max_in_flight": -1}, {"tokens": "x"}, {"weights": [["a", 10**9]]}, {}])
def test_settings_that_are_not_settings_are_a_snapshot_error(data):
    good = QueueSettings(max_in_flight=2).to_json()
    with pytest.raises((ValueError, TypeError, KeyError)):
        QueueSettings.from_json({**good, **data} if data else {})


def test_explain_names_the_limit_that_holds_a_job():
    from dpq.queue import inspect
    log = Log()
    log.run(0, queue_config(max_in_flight=1, max_rate_per_s=1.0, burst=1))
    _jobs(log, 3)
    assert len(grants(log.run(0, lease(1, 2, 3)))) == 1
    out = inspect.explain(log.state, 2, 100_000, 0, node_id=1, waiting_consumers=1)
    assert queue_pb2.HOLD_IN_FLIGHT_LIMIT in out.holds
    assert queue_pb2.HOLD_RATE_LIMIT in out.holds
    reasons = " ".join(out.reasons)
    assert "max_in_flight is 1" in reasons and "at most 1 jobs/s" in reasons


def test_settings_and_schedules_are_in_the_operators_audit_trail_without_payloads():
    from support.commands import create_schedule

    from dpq.node.applier import _audited
    log = Log()
    log.run(0, queue_config(max_in_flight=2))
    [(kind, body, result)] = log.state.operations
    assert kind == "queue_config" and "max_in_flight: 2" in _audited(body)
    assert isinstance(result, Configured) and result.config.max_in_flight == 2
    log.run(1, create_schedule("nightly"))
    [(kind, body, _)] = log.state.operations
    line = _audited(body)
    assert kind == "create_schedule" and "tick" not in line and "<4 bytes>" in line
    assert body.schedule.payload == b"tick"  # the command itself is untouched
