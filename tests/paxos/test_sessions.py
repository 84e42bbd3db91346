"""Tests of the exactly-once table of applied (client_id, seq)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpq.paxos.sessions import Sessions


def test_retried_seq_committed_after_a_later_one_is_applied_once() -> None:
    # The case a max-seq dedup gets wrong: 7 commits, then the retried 6, then 6 again.
    s = Sessions()
    assert [s.should_apply("c", n) for n in (1, 2, 3, 4, 5, 7, 6, 6, 7)] == \
        [True] * 7 + [False, False]
    assert s.floor("c") == 8


def test_noops_and_seqs_below_the_first_are_never_applied() -> None:
    s = Sessions()
    assert not s.should_apply("", 0)
    assert not s.should_apply("", 5)
    assert not s.should_apply("c", 0)
    assert len(s) == 0


def test_clients_are_independent() -> None:
    s = Sessions()
    assert s.should_apply("a", 1) and s.should_apply("b", 1)
    assert not s.should_apply("a", 1) and not s.should_apply("b", 1)


def test_floor_moves_over_contiguous_runs_and_the_set_stays_small() -> None:
    s = Sessions()
    for n in range(1, 1001):
        assert s.should_apply("c", n)
    assert s.floor("c") == 1001
    assert s._clients["c"].seqs == set()
    assert s.should_apply("c", 1003)
    assert s._clients["c"].seqs == {1003}
    assert s.is_applied("c", 1003) and not s.is_applied("c", 1002)


def test_window_bounds_the_set_and_moves_the_floor() -> None:
    # A client issues s only after every seq <= s - window is done, so applying
    # s proves the seqs below s - window + 1 are done or never issued.
    s = Sessions(window=4)
    assert s.should_apply("c", 2)  # 1 is stuck, retried later
    assert s.should_apply("c", 3)
    assert s.should_apply("c", 4)
    assert s.should_apply("c", 1)  # the retry of 1 still applies
    assert s.floor("c") == 5
    assert s.should_apply("c", 10)  # seqs grow by one or more: 5..6 were never issued
    assert s.floor("c") == 7
    assert len(s._clients["c"].seqs) <= 4
    for n in range(12, 200, 2):  # every other seq skipped: the set stays bounded
        assert s.should_apply("c", n)
        assert len(s._clients["c"].seqs) <= 4


def test_memory_stays_bounded_when_seqs_commit_in_pairs_out_of_order() -> None:
    s = Sessions(window=16)
    for n in range(1, 10_001, 2):
        assert s.should_apply("c", n + 1) and s.should_apply("c", n)
    client = s._clients["c"]
    assert client.floor == 10_001 and not client.seqs and not client.heap


def test_least_recently_applied_client_is_evicted() -> None:
    s = Sessions(max_clients=2)
    s.should_apply("a", 1)
    s.should_apply("b", 1)
    s.should_apply("a", 2)  # a is now more recent than b
    s.should_apply("c", 1)  # evicts b
    assert "a" in s and "c" in s and "b" not in s
    # The documented hazard: an evicted client's retry would be applied again.
    assert s.should_apply("b", 1)


def test_to_bytes_round_trips_and_is_deterministic() -> None:
    s = Sessions(max_clients=3, window=16)
    for client, n in [("x", 1), ("y", 5), ("x", 3), ("ü", 2), ("y", 1)]:
        s.should_apply(client, n)
    data = s.to_bytes()
    t = Sessions.from_bytes(data)
    assert t == s and t.to_bytes() == data
    assert (t.max_clients, t.window) == (3, 16)
    # Same future on both: order (LRU) and floors survived.
    for client, n in [("x", 2), ("x", 3), ("z", 1), ("q", 1), ("y", 5)]:
        assert t.should_apply(client, n) == s.should_apply(client, n)
    assert t == s


@pytest.mark.parametrize("cut", [0, 3, 10, -1])
def test_from_bytes_rejects_damaged_input(cut: int) -> None:
    s = Sessions()
    s.should_apply("client", 3)
    data = s.to_bytes()
    with pytest.raises(ValueError):
        Sessions.from_bytes(data[:cut] if cut >= 0 else data + b"\0")
    with pytest.raises(ValueError):
        Sessions.from_bytes(b"XXXX" + data[4:])


@st.composite
def client_histories(draw: st.DrawFn) -> tuple[int, list[tuple[str, int]]]:
    """Commit orders a well-behaved client can produce: seqs grow by one or more,
    a seq is issued only once every seq <= it - window is done (applied), and any
    issued seq may commit several times (retries), in any order."""
    window = draw(st.integers(1, 5))
    log: list[tuple[str, int]] = []
    clients = {name: {"next": 1, "issued": [], "done": set()} for name in ("a", "b")}
    for _ in range(draw(st.integers(0, 60))):
        name = draw(st.sampled_from(sorted(clients)))
        c = clients[name]
        s = c["next"]
        can_issue = all(x in c["done"] for x in c["issued"] if x <= s - window)
        if can_issue and draw(st.booleans()):
            c["issued"].append(s)
            c["next"] = s + draw(st.integers(1, 3))
        elif c["issued"]:  # some issued seq commits (again, if it is a retry)
            seq = draw(st.sampled_from(c["issued"]))
            log.append((name, seq))
            c["done"].add(seq)
    return window, log


@pytest.mark.slow
@given(client_histories())
@settings(max_examples=300, deadline=None)
def test_sessions_agree_with_a_set_of_everything_applied(history) -> None:
    window, log = history
    s = Sessions(window=window)
    applied: set[tuple[str, int]] = set()
    for client, seq in log:
        expected = (client, seq) not in applied
        assert s.should_apply(client, seq) == expected, (client, seq)
        applied.add((client, seq))
        state = s._clients[client]
        assert len(state.seqs) <= window  # bounded memory
        assert all(x > state.floor for x in state.seqs) and state.seqs <= set(state.heap)
        again = Sessions.from_bytes(s.to_bytes())
        assert again == s
