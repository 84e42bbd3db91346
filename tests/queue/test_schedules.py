"""Periodic jobs in the state machine (dpq.queue.schedules, dpq.queue.timetable).

Each tick is a command; the state enqueues one job for the schedule's next tick
and drops every other (a duplicate, a tick of another version, an early one).
After a short gap every missed tick runs late; after a long one only one does.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.commands import MEMBERS, Log

from dpq.queue import snapshot, timetable
from dpq.queue.jobs import JobState
from dpq.queue.results import Refusal, Refused
from dpq.queue.schedules import (
    CATCH_UP_GRACE_US,
    MAX_SCHEDULES,
    ScheduleRemoved,
    ScheduleSet,
    Ticked,
)
from dpq.queue.state import QueueState
from dpq.v1 import log_pb2, queue_pb2

S = 1000  # ms
T0 = 1_700_000_000_000  # ms: 2023-11-14 22:13:20 UTC


def create(name="tick", every_ms=1000, cron="", start_at=0, jitter_ms=0, replace=False,
           queue="q", priority=2, payload=b"p"):
    return log_pb2.Command(create_schedule=log_pb2.CreateScheduleCommand(
        schedule=queue_pb2.Schedule(name=name, queue=queue, priority=priority, payload=payload,
                                    every_ms=every_ms, cron=cron, start_at=start_at,
                                    jitter_ms=jitter_ms),
        replace=replace))


def delete(name="tick"):
    return log_pb2.Command(delete_schedule=log_pb2.DeleteScheduleCommand(name=name))


def tick(name, fire_at_us, version, owner=1):
    return log_pb2.Command(schedule_tick=log_pb2.ScheduleTickCommand(
        name=name, fire_at_us=fire_at_us, version=version, owner=owner))


def next_tick(log: Log, name="tick", owner=1):
    entry = log.state.schedules.get(name)
    return tick(name, entry.next_fire_at_us, entry.version, owner)


def jobs_of(state: QueueState) -> list:
    return sorted((j.job_id, j.queue, j.priority, j.payload, j.owner) for j in state.jobs.values())


def test_every_ms_ticks_enqueue_one_job_each_and_walk_the_grid():
    log = Log()
    [made] = log.run(T0, create(every_ms=1000))
    assert made == ScheduleSet("tick", 1, False, True, T0 * 1000)  # start_at 0: now
    for n in range(3):
        entry = log.state.schedules.get("tick")
        assert entry.next_fire_at_us == (T0 + n * S) * 1000
        [done] = log.run(T0 + n * S + 7, next_tick(log, owner=2))
        assert done.job_id and not done.dropped
    assert [j[1:] for j in jobs_of(log.state)] == [("q", 2, b"p", 2)] * 3
    entry = log.state.schedules.get("tick")
    assert (entry.fired, entry.last_job_id, entry.last_fire_at_us) == (3, 3, (T0 + 2 * S) * 1000)
    assert entry.next_fire_at_us == (T0 + 3 * S) * 1000
    assert log.state.totals.of("q").enqueued[1] == 3
    assert log.state.jobs[3].state == JobState.READY


def test_cron_ticks_fall_on_the_expression_in_utc():
    log = Log()
    log.run(T0, create(cron="*/5 * * * *", every_ms=0))
    fires = []
    for _ in range(3):
        entry = log.state.schedules.get("tick")
        fires.append(entry.next_fire_at_us)
        log.run(entry.next_fire_at_us // 1000, next_tick(log))
    stamps = [datetime.fromtimestamp(f / 1e6, UTC) for f in fires]
    assert [(d.hour, d.minute, d.second) for d in stamps] == [(22, 15, 0), (22, 20, 0),
                                                              (22, 25, 0)]
    assert len(log.state.jobs) == 3


def test_start_at_delays_the_first_tick():
    log = Log()
    log.run(T0, create(every_ms=60_000, start_at=(T0 + 30 * S) * 1000))
    assert log.state.schedules.get("tick").next_fire_at_us == (T0 + 30 * S) * 1000


def test_a_duplicate_tick_is_dropped():
    log = Log()
    log.run(T0, create())
    first = next_tick(log)
    [done] = log.run(T0 + 10, first)
    [again] = log.run(T0 + 20, first)
    assert done.job_id == 1
    assert again.job_id == 0 and "seen already" in again.dropped
    assert len(log.state.jobs) == 1
    assert log.state.refusals == []  # a dropped tick is no error


def test_a_tick_of_another_version_is_dropped():
    log = Log()
    log.run(T0, create())
    stale = next_tick(log)
    [replaced] = log.run(T0 + 1, create(every_ms=2000, replace=True))
    assert replaced.existed and replaced.changed and replaced.version == 2
    [dropped] = log.run(T0 + 5, stale)
    assert dropped.job_id == 0 and "version 1" in dropped.dropped
    assert not log.state.jobs


def test_an_early_tick_is_dropped():
    log = Log()
    log.run(T0, create(start_at=(T0 + 5 * S) * 1000))
    [early] = log.run(T0 + 4 * S, next_tick(log))
    assert early.job_id == 0 and "early" in early.dropped
    [done] = log.run(T0 + 5 * S, next_tick(log))
    assert done.job_id == 1


def test_create_without_replace_keeps_the_schedule():
    log = Log()
    log.run(T0, create(every_ms=1000))
    [kept] = log.run(T0 + 1, create(every_ms=5000))
    assert kept == ScheduleSet("tick", 1, True, False, T0 * 1000)
    assert log.state.schedules.get("tick").every_ms == 1000


def test_delete_drops_later_ticks_and_frees_the_memory():
    log = Log()
    empty = log.state.held_bytes
    log.run(T0, create(payload=b"x" * 1000))
    assert log.state.held_bytes > empty + 1000
    pending = next_tick(log)
    [gone] = log.run(T0 + 1, delete())
    assert gone == ScheduleRemoved("tick", True)
    assert log.state.held_bytes == empty
    [dropped] = log.run(T0 + 2, pending)
    assert dropped.job_id == 0
    assert log.run(T0 + 3, delete()) == [ScheduleRemoved("tick", False)]


def test_a_long_gap_gives_one_catch_up_job():
    """The whole cluster was down for 100 intervals: one job, then on time again."""
    log = Log()
    log.run(T0, create(every_ms=1000))
    [done] = log.run(T0 + 100 * S, next_tick(log))  # the first, long overdue
    assert done.job_id == 1
    entry = log.state.schedules.get("tick")
    assert entry.next_fire_at_us == (T0 + 101 * S) * 1000  # the first after the leader time
    [early] = log.run(T0 + 100 * S + 10, next_tick(log))
    assert early.job_id == 0
    assert len(log.state.jobs) == 1


def test_a_short_gap_runs_every_missed_tick_late():
    """A leader change of 3 s: the ticks of those 3 s all run, late, one job each."""
    log = Log()
    log.run(T0, create(every_ms=1000))
    now = T0 + 3 * S + 500
    fired = []
    while log.state.schedules.get("tick").next_fire_at_us <= now * 1000:
        fired.append(log.state.schedules.get("tick").next_fire_at_us)
        [done] = log.run(now, next_tick(log))
        assert done.job_id
        now += 1
    assert fired == [(T0 + n * S) * 1000 for n in range(4)]
    assert len(log.state.jobs) == 4


def test_the_grace_is_the_boundary():
    log = Log()
    log.run(T0, create(every_ms=1000))
    # the tick after T0 is T0 + 1 s; at exactly grace behind it is still run
    now_ms = T0 + S + CATCH_UP_GRACE_US // 1000
    log.run(now_ms, next_tick(log))
    assert log.state.schedules.get("tick").next_fire_at_us == (T0 + S) * 1000
    log.run(T0 + 7 * S + 1, next_tick(log))
    # T0 + 2 s is now more than the grace behind: skip past the leader time
    assert log.state.schedules.get("tick").next_fire_at_us == (T0 + 8 * S) * 1000
    assert len(log.state.jobs) == 2


def test_jitter_is_deterministic_and_within_bounds():
    values = [timetable.jitter_us("a", n * 1_000_000, 500) for n in range(2000)]
    assert values == [timetable.jitter_us("a", n * 1_000_000, 500) for n in range(2000)]
    assert min(values) >= 0 and max(values) <= 500_000
    assert len(set(values)) > 1500  # spread, not constant
    assert values != [timetable.jitter_us("b", n * 1_000_000, 500) for n in range(2000)]
    assert timetable.jitter_us("a", 5, 0) == 0
    log = Log()
    log.run(T0, create(every_ms=10_000, jitter_ms=2000))
    for n in range(5):
        entry = log.state.schedules.get("tick")
        nominal = (T0 + n * 10 * S) * 1000
        assert entry.next_nominal_us == nominal
        assert entry.next_fire_at_us == nominal + timetable.jitter_us("tick", nominal, 2000)
        log.run(entry.next_fire_at_us // 1000 + 1, next_tick(log))


@pytest.mark.parametrize("command, detail", [
    (create(cron="* * * *", every_ms=0), "5 (minute"),
    (create(cron="* * * * *", every_ms=1000), "exactly one"),
    (create(cron="", every_ms=0), "exactly one"),
    (create(every_ms=999), "every_ms 999"),
    (create(name=""), "schedule.name"),
    (create(name="n" * 201), "schedule.name"),
    (create(queue="bad queue"), "schedule.queue"),
    (create(priority=6), "schedule.priority"),
    (tick("tick", 5, 1, owner=9), "owner 9"),
    (tick("tick", 0, 1), "fire_at_us"),
])
def test_the_state_refuses_bad_commands_without_raising(command, detail):
    log = Log()
    [result] = log.run(T0, command)
    assert isinstance(result, Refused), result
    assert detail in result.detail
    assert not log.state.schedules.entries and not log.state.jobs


def test_the_cap_on_schedules():
    log = Log()
    log.state.schedules.entries.update({f"s{i}": None for i in range(MAX_SCHEDULES)})
    [result] = log.run(T0, create(name="one-more"))
    assert result.reason == Refusal.INVALID and str(MAX_SCHEDULES) in result.detail


def test_a_cron_that_never_matches_never_ticks():
    log = Log()
    log.run(T0, create(cron="0 0 30 2 *", every_ms=0))
    assert log.state.schedules.get("tick").next_fire_at_us == timetable.NEVER
    assert log.state.schedules.earliest() is None


def test_the_ticker_view_earliest_and_due():
    log = Log()
    log.run(T0, create("a", every_ms=5000), create("b", every_ms=2000, start_at=(T0 + S) * 1000))
    table = log.state.schedules
    assert table.earliest() == T0 * 1000
    assert [s.name for s in table.due((T0 + S) * 1000)] == ["a", "b"]
    log.run(T0 + S, next_tick(log, "a"))
    assert table.earliest() == (T0 + S) * 1000
    assert [s.name for s in table.due((T0 + S) * 1000)] == ["b"]
    log.run(T0 + S, delete("b"))
    assert table.earliest() == (T0 + 5 * S) * 1000


# ------------------------------------------------------------------ snapshots

def _state_with_schedules() -> Log:
    log = Log()
    log.run(T0, create("a", every_ms=1000, jitter_ms=300, payload=b"\x00\xff"),
            create("c", cron="0 * * * *", every_ms=0, priority=5))
    log.run(T0 + 2 * S, next_tick(log, "a"))
    return log


def test_snapshot_round_trip_keeps_the_schedules():
    log = _state_with_schedules()
    loaded = snapshot.load(snapshot.dump(log.state), members=MEMBERS)
    assert loaded.schedules.to_json() == log.state.schedules.to_json()
    assert loaded.held_bytes == log.state.held_bytes
    assert loaded.schedules.earliest() == log.state.schedules.earliest()
    # the loaded replica applies the next tick as the original does
    other = Log(loaded)
    other.slot, other.seq = log.slot, log.seq
    assert other.run(T0 + 3 * S, next_tick(other, "a")) == log.run(T0 + 3 * S,
                                                                      next_tick(log, "a"))
    assert jobs_of(loaded) == jobs_of(log.state)


def test_a_snapshot_without_schedules_loads_with_none():
    """A snapshot without a "schedules" key (as every one before them) loads with none
    (a real version-4 file: tests/queue/test_limits.py)."""
    log = _state_with_schedules()
    data = snapshot.dump(log.state)
    head = struct.Struct("<4sHI")
    magic, version, meta_len = head.unpack_from(data)
    meta = orjson.loads(data[head.size:head.size + meta_len])
    del meta["schedules"]
    old_meta = orjson.dumps(meta)
    old = head.pack(magic, version, len(old_meta)) + old_meta + data[head.size + meta_len:]
    loaded = snapshot.load(old, members=MEMBERS)
    assert len(loaded.schedules) == 0
    assert jobs_of(loaded) == jobs_of(log.state)


def test_a_corrupt_schedule_row_is_a_snapshot_error():
    log = _state_with_schedules()
    data = snapshot.dump(log.state)
    head = struct.Struct("<4sHI")
    magic, version, meta_len = head.unpack_from(data)
    meta = orjson.loads(data[head.size:head.size + meta_len])
    meta["schedules"][0][9] = -1
    bad_meta = orjson.dumps(meta)
    bad = head.pack(magic, version, len(bad_meta)) + bad_meta + data[head.size + meta_len:]
    with pytest.raises(snapshot.SnapshotError):
        snapshot.load(bad, members=MEMBERS)


# ------------------------------------------------------------------ replicas agree

schedule_ops = st.one_of(
    st.builds(lambda name, every, jitter, start, replace: ("create", name, every, jitter,
                                                          start, replace),
              st.sampled_from(["a", "b"]), st.sampled_from([1000, 1500, 4000]),
              st.sampled_from([0, 0, 700]), st.sampled_from([0, 0, 2500]), st.booleans()),
    st.builds(lambda name: ("delete", name), st.sampled_from(["a", "b"])),
    st.builds(lambda name, skew, stale: ("tick", name, skew, stale),
              st.sampled_from(["a", "b"]), st.sampled_from([-1, 0, 0, 1]), st.booleans()),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9000), schedule_ops), max_size=30),
       st.integers(0, 30))
def test_replicas_applying_the_same_ticks_agree(steps, cut):
    """One replica applies everything; another starts from a snapshot taken part way.
    Ticks are built from the first replica's view (right, duplicated, off by one µs,
    of a stale version): both hold the same schedules and jobs, and no schedule fired
    more often than its ticks were right."""
    first, second = Log(), None
    now = T0
    seen_versions: dict[str, list[int]] = {}
    fired: list[tuple[str, int, int]] = []
    for i, (advance, op) in enumerate(steps):
        if i == cut:
            second = Log(snapshot.load(snapshot.dump(first.state), members=MEMBERS))
            second.slot, second.seq = first.slot, first.seq
        now += advance
        if op[0] == "create":
            _, name, every, jitter, start, replace = op
            command = create(name, every_ms=every, jitter_ms=jitter,
                             start_at=(now + start) * 1000 if start else 0, replace=replace)
        elif op[0] == "delete":
            command = delete(op[1])
        else:
            _, name, skew, stale = op
            entry = first.state.schedules.get(name)
            if entry is None:
                command = tick(name, now * 1000, 1)
            else:
                versions = seen_versions.get(name, [entry.version])
                version = versions[0] if stale else entry.version
                command = tick(name, max(1, entry.next_fire_at_us + skew), version,
                               owner=1 + i % 3)
        results = first.run(now, command)
        if second is not None:
            assert second.run(now, command) == results
        if op[0] == "create" and isinstance(results[0], ScheduleSet):
            seen_versions.setdefault(op[1], []).append(results[0].version)
        if isinstance(results[0], Ticked) and results[0].job_id:
            t = command.schedule_tick
            assert t.fire_at_us <= now * 1000
            fired.append((t.name, t.version, t.fire_at_us))
    if second is not None:
        assert second.state.schedules.to_json() == first.state.schedules.to_json()
        assert jobs_of(second.state) == jobs_of(first.state)
        assert second.state.held_bytes == first.state.held_bytes
    # no tick (schedule, version, fire time) enqueued twice, and every job is a tick's
    assert len(set(fired)) == len(fired) == len(first.state.jobs)
