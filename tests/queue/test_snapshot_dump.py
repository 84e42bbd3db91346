"""A snapshot written a piece at a time, while commands keep applying, is the
state exactly as it was when the snapshot began (copy-on-write in QueueState)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.commands import (
    MEMBERS,
    Log,
    ack,
    commands,
    enqueue,
    expire,
    extend,
    lease,
    nack,
    reassign,
)

from dpq.queue import snapshot

timed_commands = st.lists(st.tuples(st.integers(0, 400), commands), max_size=15)


def _run(log: Log, steps, now: int = 0) -> int:
    for step, command in steps:
        now += step
        log.run(now, command)
    return now


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timed_commands, timed_commands, st.integers(1, 4))
def test_a_dump_written_while_commands_apply_is_the_state_when_it_began(before, during, budget):
    log = Log()
    now = _run(log, before)
    expected = snapshot.dump(log.state)
    slot = log.state.applied_slot

    dump = snapshot.Dump(log.state)
    done = False
    for step, command in during:
        done = done or dump.step(budget)
        now = _run(log, [(step, command)], now)
    while not done:
        done = dump.step(budget)

    assert not dump.abandoned and dump.slot == slot
    assert b"".join(dump.chunks) == expected
    # The state was thawed: it changes freely and can be dumped again.
    snapshot.load(snapshot.dump(log.state), members=MEMBERS)


def test_a_job_changed_twice_during_a_dump_is_written_as_it_was_first():
    log = Log()
    log.run(0, enqueue((1, b"a"), (2, b"b")))
    expected = snapshot.dump(log.state)
    dump = snapshot.Dump(log.state)
    log.run(1, lease(1))
    log.run(2, ack((1, 1)))  # removed
    log.run(3, enqueue((3, b"c")))  # born after the dump began
    while not dump.step(1):
        pass
    assert b"".join(dump.chunks) == expected
    assert sorted(snapshot.load(expected, members=MEMBERS).jobs) == [1, 2]


@pytest.mark.parametrize("settle", [
    ack((1, 1)), nack((1, 1), delay_ms=100), extend((1, 1), lease_ms=5000),
    reassign([1, 2], [2, 2]),
])
def test_every_kind_of_change_to_a_leased_job_keeps_its_original(settle):
    log = Log()
    log.run(0, enqueue((1, b"a"), (2, b"b")))
    log.run(1, lease(1))
    expected = snapshot.dump(log.state)
    dump = snapshot.Dump(log.state)
    log.run(2, settle)
    log.run(3, expire((1, 1)))  # the lease ran out meanwhile (a no-op once acked)
    while not dump.step(1):
        pass
    assert b"".join(dump.chunks) == expected


def test_a_dump_of_a_state_that_was_reset_is_abandoned():
    log = Log()
    log.run(0, enqueue((1, b"a")))
    dump = snapshot.Dump(log.state)
    log.state.reset()  # a snapshot from the leader replaced everything
    assert dump.step(10) is True and dump.abandoned
    snapshot.Dump(log.state).close()  # the new state is not frozen


def test_one_dump_at_a_time_and_close_thaws():
    log = Log()
    dump = snapshot.Dump(log.state)
    with pytest.raises(RuntimeError, match="already frozen"):
        snapshot.Dump(log.state)
    dump.close()
    dump.close()  # idempotent
    snapshot.Dump(log.state).close()
    with pytest.raises(RuntimeError, match="closed"):
        dump.step(1)
