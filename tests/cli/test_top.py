"""``dpq top``: the pure part (samples → rows, rates, sparklines) and its drawing,
with made-up ClusterInfo and Stats (no cluster)."""

from __future__ import annotations

import io

from rich.console import Console

from dpq.cli import top, topmodel
from dpq.cli.main import main
from dpq.cli.topmodel import History, Sample
from dpq.v1 import queue_pb2


def info(leader: int = 2, served_by: str = "gateway") -> queue_pb2.ClusterInfoResponse:
    return queue_pb2.ClusterInfoResponse(
        leader_id=leader, served_by=served_by, cluster_fingerprint="ac2ed876", nodes=[
            queue_pb2.NodeInfo(node_id=3, address="127.0.0.1:7003", role="follower",
                               reachable=False, commit_index=90, applied_index=80,
                               cpu_percent=0, balancer_weight=0),
            queue_pb2.NodeInfo(node_id=1, address="127.0.0.1:7001", role="follower",
                               reachable=True, commit_index=100, applied_index=98,
                               cpu_percent=41.6, balancer_weight=70, ready_depth=12,
                               learner=True),
            queue_pb2.NodeInfo(node_id=2, address="127.0.0.1:7002", role="leader",
                               reachable=True, commit_index=100, applied_index=100,
                               cpu_percent=12.0, balancer_weight=130, ready_depth=7)])


def stats(queue: str = "emails", *, enqueued=(0,) * 5, delivered=(0,) * 5, acked=(0,) * 5,
          ready=(0,) * 5, oldest=(0,) * 5, paused=False) -> queue_pb2.QueueStats:
    return queue_pb2.QueueStats(queue=queue, ready_by_priority=ready, oldest_ready_age_ms=oldest,
                                enqueued_by_priority=enqueued, delivered_by_priority=delivered,
                                acked_by_priority=acked, paused=paused, delayed=2, leased=3,
                                dead=1)


# ------------------------------------------------------------------ the pure part

def test_sparkline_scales_to_the_largest_and_leaves_gaps_for_nothing():
    assert topmodel.sparkline([0, 1, 2, 4, 8, None]) == " ▁▂▄█ "
    assert topmodel.sparkline([5, 5]) == "██"
    assert topmodel.sparkline([]) == ""
    assert topmodel.sparkline([None, 0]) == "  "
    line = topmodel.sparkline(range(1, 9))
    assert line[0] == "▁" and line[-1] == "█" and list(line) == sorted(line)


def test_rate_is_unknown_without_an_earlier_reading_or_after_a_reset():
    assert topmodel.rate(None, 10, 1.0) is None
    assert topmodel.rate(10, 30, 2.0) == 10.0
    assert topmodel.rate(30, 10, 1.0) is None  # the answering node started over
    assert topmodel.rate(10, 10, 0.0) is None


def test_nodes_sorted_with_their_lag_behind_the_leaders_commit():
    rows = topmodel.node_rows(info())
    assert [r.node_id for r in rows] == [1, 2, 3]
    one, two, three = rows
    assert (one.role, one.lag, one.cpu_percent, one.weight, one.ready) == \
        ("follower (learner)", 2, 41.6, 70, 12)
    assert (two.role, two.lag) == ("leader", 0)
    assert (three.reachable, three.lag) == (False, 20)


def test_through_a_node_the_gateways_numbers_are_unknown():
    rows = topmodel.node_rows(info(served_by="node 2"))
    assert all(r.cpu_percent is None and r.weight is None and r.ready is None for r in rows)


def test_rates_come_from_counter_differences_between_two_samples():
    history = History()
    before = Sample(10.0, info(), [stats(enqueued=(10, 0, 5, 0, 0), delivered=(4, 0, 0, 0, 0),
                                         acked=(2, 0, 0, 0, 0))])
    now = Sample(12.0, info(), [stats(enqueued=(30, 0, 5, 0, 0), delivered=(14, 0, 0, 0, 0),
                                      acked=(12, 0, 0, 0, 0), ready=(16, 0, 5, 0, 0),
                                      oldest=(1500, 0, 90_000, 0, 0))])
    first = topmodel.frame("gw", None, before, history)
    assert all(q.enqueue_rate is None for q in first.queues)  # nothing to compare with yet
    frame = topmodel.frame("gw", before, now, history)
    rows = {q.priority: q for q in frame.queues}
    assert set(rows) == {1, 3}  # priorities 2, 4, 5 never held or moved anything
    p1, p3 = rows[1], rows[3]
    assert (p1.ready, p1.oldest_age_ms) == (16, 1500)
    assert (p1.enqueue_rate, p1.delivery_rate, p1.ack_rate) == (10.0, 5.0, 5.0)
    assert (p3.ready, p3.enqueue_rate, p3.delivery_rate) == (5, 0.0, 0.0)
    assert p1.spark == " █"  # unknown, then the only rate so far
    assert (frame.leader_id, frame.leader.address, frame.error) == (2, "127.0.0.1:7002", "")
    assert (frame.delayed, frame.leased, frame.dead) == (2, 3, 1)


def test_the_sparkline_covers_the_last_minute_of_deliveries():
    history = History(width=4)
    samples = [Sample(float(t), info(), [stats(delivered=(n, 0, 0, 0, 0))])
               for t, n in enumerate((0, 1, 3, 6, 10, 10, 20))]
    before = None
    for sample in samples:
        frame = topmodel.frame("gw", before, sample, history)
        before = sample
    # rates 1, 2, 3, 4, 0, 10 per second: the last 4 kept
    assert frame.queues[0].spark == topmodel.sparkline([3, 4, 0, 10]) == "▃▄ █"


def test_an_empty_queue_keeps_one_row_and_a_reset_counter_no_rate():
    history = History()
    before = Sample(0.0, info(), [stats("idle"), stats("busy", enqueued=(50, 0, 0, 0, 0))])
    now = Sample(1.0, info(), [stats("idle"), stats("busy", enqueued=(3, 0, 0, 0, 0))])
    rows = topmodel.frame("gw", before, now, history).queues
    assert [(q.queue, q.priority) for q in rows] == [("busy", 1), ("idle", 1)]
    assert rows[0].enqueue_rate is None  # 50 -> 3: another node's counts


def test_an_unreachable_cluster_is_a_frame_with_the_error():
    frame = topmodel.frame("127.0.0.1:1", None, Sample(0.0, error="UNAVAILABLE: refused"),
                           History())
    assert frame.error == "UNAVAILABLE: refused" and frame.nodes == () and frame.leader is None


def test_ages_and_rates_read_well():
    assert [topmodel.age(ms) for ms in (850, 12_500, 245_000, 7_800_000)] == \
        ["850ms", "12.5s", "4m05s", "2h10m"]
    assert [topmodel.per_second(v) for v in (None, 2.25, 350.4, 12_345)] == \
        ["-", "2.2", "350", "12k"]


# ------------------------------------------------------------------ drawing

def drawn(frame: topmodel.Frame) -> str:
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(top.render(frame, stamp="12:00:00"))
    return out.getvalue()


def test_a_frame_shows_the_leader_nodes_and_queues():
    history = History()
    before = Sample(0.0, info(), [stats(delivered=(0, 0, 0, 0, 0))])
    now = Sample(1.0, info(), [stats(enqueued=(40, 0, 0, 0, 0), delivered=(25, 0, 0, 0, 0),
                                     ready=(15, 0, 0, 0, 0), oldest=(2500, 0, 0, 0, 0),
                                     paused=True)])
    text = drawn(topmodel.frame("127.0.0.1:7000", before, now, history))
    assert "leader: node 2 (127.0.0.1:7002)" in text
    assert "cluster ac2ed876" in text
    assert "follower (learner)" in text and "NO" in text
    line = next(line for line in text.splitlines() if "emails" in line)
    assert line.split()[2:10] == ["(paused)", "p1", "15", "2.5s", "40.0", "25.0", "0.0", "█"]


def test_an_unreachable_frame_says_so_and_that_it_retries():
    text = drawn(topmodel.frame("127.0.0.1:1", None, Sample(0.0, error="UNAVAILABLE: x"),
                                History()))
    assert "cannot reach the cluster at 127.0.0.1:1: UNAVAILABLE: x" in text
    assert "trying again every 1s" in text


def test_once_against_nothing_prints_the_frame_and_fails(capsys):
    assert main(["top", "--once", "--target", "127.0.0.1:1", "--interval", "10ms"]) == 1
    out = capsys.readouterr().out
    assert "cannot reach the cluster at 127.0.0.1:1" in out
    assert "Traceback" not in out
