"""dpq.node.readiness: when a node's gRPC health says SERVING (pure)."""

from dpq.node.readiness import Readiness


def assess(r: Readiness, applied: int, commit: int, lease: bool = True, leader: int | None = 1):
    return r.assess(applied=applied, leader_commit=commit, in_lease=lease, leader=leader)


def test_not_serving_until_the_log_known_at_start_is_replayed():
    r = Readiness(replay_through=50)
    verdict = assess(r, applied=10, commit=50)
    assert not verdict.serving and "replaying" in verdict.reason
    assert assess(r, applied=50, commit=50).serving


def test_not_serving_without_a_live_leader():
    r = Readiness(replay_through=0)
    assert not assess(r, 0, 0, lease=False).serving
    assert not assess(r, 0, 0, lease=True, leader=None).serving
    assert assess(r, 0, 0).serving
    # Losing the quorum (a leader stepped down, a follower heard none) flips it back.
    verdict = assess(r, 5, 5, lease=False, leader=None)
    assert not verdict.serving and "no live leader" in verdict.reason


def test_serving_only_once_caught_up_within_the_bound():
    r = Readiness(replay_through=0, catch_up=10, fall_behind=100)
    verdict = assess(r, applied=0, commit=500)
    assert not verdict.serving and "500 behind" in verdict.reason
    assert not assess(r, applied=489, commit=500).serving
    assert assess(r, applied=490, commit=500).serving


def test_a_serving_node_stops_only_past_the_wider_bound():
    r = Readiness(replay_through=0, catch_up=10, fall_behind=100)
    assert assess(r, 100, 100).serving
    assert assess(r, 100, 200).serving  # 100 behind: still serving
    assert not assess(r, 100, 201).serving
    assert not assess(r, 150, 201).serving  # out again: the narrow bound applies
    assert assess(r, 191, 201).serving


def test_replay_is_done_once():
    r = Readiness(replay_through=20)
    assert assess(r, 20, 20).serving
    # A snapshot install may move applied anywhere later: replay is not asked again.
    assert assess(r, 5, 5).serving
