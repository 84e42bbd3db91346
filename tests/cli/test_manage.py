"""``dpq job …`` and ``dpq queue …`` without a cluster: parsing, refusals made before
connecting, and the formatting (dpq.cli.manage). Against real nodes:
tests/cli/test_manage_cluster.py."""

from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from dpq.cli import main
from dpq.cli.commands import duration
from dpq.cli.manage import (
    affected_line,
    explain_lines,
    list_lines,
    pause_line,
    relative,
    selector_of,
    show_lines,
    span,
    table,
    to_json,
)
from dpq.client import Affected, Explanation, Hold, JobInfo, JobPage, JobState, QueuePause

NOW = datetime(2026, 11, 30, 6, 0, 0, tzinfo=UTC)


_BASE = JobInfo(job_id=17, queue="mail", priority=3, state=JobState.DEAD, attempt=5,
                owner_node=2, payload_bytes=5, payload=b"hello",
                created_at=NOW - timedelta(minutes=3), ready_at=NOW - timedelta(seconds=40),
                lease_expires_at=None, finished_at=None, aged_key_us=123, consumer_id="",
                last_error="", dedup_key="", cancel_requested=False)


def _job(**fields) -> JobInfo:
    return dataclasses.replace(_BASE, **fields)


# ------------------------------------------------------------------- parsing


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("250ms", 0.25), ("1.5h", 5400),
    ("45", 45),
])
def test_durations_take_the_units_people_write(text, seconds):
    assert duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10 minutes", "1w", "-5s", "", "m"])
def test_anything_else_is_not_a_duration(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        duration(text)


def _ns(**over) -> argparse.Namespace:
    args = argparse.Namespace(job_ids=[], queue=None, state=None, priority=None,
                              dedup_prefix=None, all=False)
    vars(args).update(over)
    return args


def test_the_options_make_the_selector():
    chosen = selector_of(_ns(job_ids=[4, 9], queue="mail", state="dead", priority=2,
                             dedup_prefix="u7:"))
    pb = chosen.to_pb()
    assert list(pb.job_ids) == [4, 9] and pb.queue == "mail" and pb.priority == 2
    assert pb.dedup_key_prefix == "u7:" and not pb.all
    assert selector_of(_ns(all=True)).to_pb().all


def test_selecting_nothing_is_refused_without_all():
    from dpq.cli.commands import CommandError

    with pytest.raises(CommandError, match="--all"):
        selector_of(_ns())


@pytest.mark.parametrize(("argv", "message"), [
    (["job", "cancel"], "dpq job cancel: select jobs"),
    (["job", "retry", "--json"], "dpq job retry: select jobs"),
    (["job", "priority", "1"], "dpq job priority: select jobs"),
    (["queue", "purge", "mail"], "dpq queue purge: this removes every job of queue 'mail'"),
])
def test_refusals_before_connecting_are_one_line_and_exit_1(argv, message, capsys):
    # --target points nowhere: these must fail before any connection is tried
    assert main([*argv, "--target", "127.0.0.1:1"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().startswith(message) and captured.out == ""


def test_a_bad_state_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["job", "list", "--state", "dying"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_every_new_command_has_help(capsys):
    for argv in (["job", "show"], ["job", "list"], ["job", "cancel"], ["job", "retry"],
                 ["job", "priority"], ["job", "explain"], ["queue", "pause"],
                 ["queue", "resume"], ["queue", "purge"]):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and out.startswith(f"usage: dpq {' '.join(argv)}")
        assert "--json" in out and "--target" in out


# ---------------------------------------------------------------- formatting


def test_tables_align_columns_and_right_align_numbers():
    lines = table([["id", "queue", "p"], ["7", "mail", "1"], ["1234", "x", "5"]],
                  right=frozenset({0, 2}))
    assert lines == ["  id  queue  p", "   7  mail   1", "1234  x      5"]
    assert table([]) == []
    assert table([["a", ""], ["bb", ""]]) == ["a", "bb"]  # no trailing spaces


@pytest.mark.parametrize(("seconds", "text"), [
    (0.4, "now"), (-0.9, "now"), (45, "in 45s"), (-45, "45s ago"), (600, "in 10m"),
    (7300, "in 2h"), (-90000, "1d ago"),
])
def test_times_read_relative_to_now(seconds, text):
    assert relative(NOW + timedelta(seconds=seconds), NOW) == text
    assert relative(None, NOW) == "-"
    assert span(59.9) == "59s"


def test_job_list_is_a_table_with_a_hint_for_the_next_page():
    page = JobPage((_job(), _job(job_id=1234, state=JobState.LEASED, cancel_requested=True,
                                 last_error="KeyError: 'x'\n" + "y" * 100, ready_at=None)),
                   "tok")
    lines = list_lines(page, NOW)
    assert lines[0].split() == ["id", "queue", "p", "state", "attempt", "due", "node", "last",
                                "error"]
    assert lines[1].split()[:6] == ["17", "mail", "3", "dead", "5", "40s"]
    assert "leased (cancel requested)" in lines[2] and lines[2].endswith("…")
    assert "\n" not in lines[2] and len(lines[2]) < 140
    assert lines[-1] == "(more: add --page-token tok)"
    assert list_lines(JobPage((), ""), NOW) == ["no jobs match"]


def test_job_show_is_one_field_a_line_then_the_payload():
    lines = show_lines(_job(last_error="ValueError: boom", dedup_key="k1"), NOW)
    fields = {line.split("  ")[0]: line for line in lines if line}
    assert fields["job"].split()[-1] == "17" and fields["state"].endswith("dead")
    assert fields["last error"].endswith("ValueError: boom")
    assert fields["dedup key"].endswith("k1") and "(3m ago)" in fields["created"]
    assert "lease ends" not in fields and "consumer" not in fields
    assert lines[-1] == "hello" and lines[-2] == ""


def test_change_and_pause_lines_say_what_happened():
    args = argparse.Namespace(new_priority=1, queue="mail")
    assert affected_line("cancel", Affected(3, 1, 40), args) == \
        "cancelled 3 jobs; 1 leased job go when the lease ends unacked (log slot 40)"
    assert affected_line("retry", Affected(1, 0, 41), args) == \
        "retried 1 job (ready again) (log slot 41)"
    assert affected_line("priority", Affected(2, 0, 42), args) == \
        "set priority 1 on 2 jobs (log slot 42)"
    assert affected_line("purge", Affected(0, 0, 43), args) == \
        "purged 0 jobs of queue mail (log slot 43)"
    assert pause_line(QueuePause("mail", True, None, False, 9), NOW) == \
        "queue mail paused until dpq queue resume (log slot 9)"
    until = pause_line(QueuePause("mail", True, NOW + timedelta(minutes=10), False, 9), NOW)
    assert until.startswith("queue mail paused until ") and "(in 10m)" in until
    assert pause_line(QueuePause("mail", False, None, True, 10), NOW) == \
        "queue mail resumed (log slot 10)"
    assert pause_line(QueuePause("mail", False, None, False, 11), NOW) == \
        "queue mail was not paused (log slot 11)"


def test_explain_names_the_holds_and_the_estimate():
    why = Explanation(_job(state=JobState.READY), 12, 30, (Hold.PRIORITY_AHEAD, Hold.PAUSED),
                      ("12 more urgent jobs go first", "queue mail is paused"), 4.25,
                      None, None, 1, 456)
    lines = explain_lines(why, NOW)
    assert lines[0] == "job 17 in queue mail: ready, priority 3, attempt 5, on node 2"
    assert lines[1] == "ahead of it: 12 on node 2, 30 in the cluster"
    assert lines[2] == "held by: priority_ahead, paused"
    assert "  - queue mail is paused" in lines
    assert "drain rate: 4.2 jobs/s; estimated start: unknown" in lines
    assert "waiting consumers on node 2: unknown" in lines
    assert lines[-1] == "answered by node 1 as of log slot 456"


def test_json_is_plain_values_with_the_payload_exact():
    data = json.loads(json.dumps(to_json(_job(payload=b"\xffok"))))
    assert data["job_id"] == 17 and data["state"] == "dead" and data["payload_bytes"] == 5
    assert data["created_at"] == "2026-11-30T05:57:00+00:00" and data["finished_at"] is None
    assert data["payload_base64"] == "/29r" and data["payload_text"] is None
    assert "payload" not in data
    assert "payload_base64" not in to_json(_job(payload=None))
    page = to_json(JobPage((_job(),), ""))
    assert page["next_page_token"] == "" and page["jobs"][0]["payload_text"] == "hello"
    why = to_json(Explanation(_job(), 0, 0, (Hold.DEAD,), ("out of attempts",), 0.0, None, 2, 1,
                              5))
    assert why["holds"] == ["dead"] and why["waiting_consumers"] == 2
    assert why["job"]["job_id"] == 17
    assert to_json(Affected(3, 0, 7)) == {"count": 3, "deferred": 0, "slot": 7}


def test_stats_says_whether_and_how_long_a_queue_is_paused():
    from dpq.cli.commands import _paused
    from dpq.v1 import queue_pb2

    now_us = 1_700_000_000_000_000
    assert _paused(queue_pb2.QueueStats(queue="q"), now_us) == "no"
    assert _paused(queue_pb2.QueueStats(paused=True), now_us) == "until resumed"
    assert _paused(queue_pb2.QueueStats(paused=True, paused_until_us=now_us + 600_000_000),
                   now_us) == "for 10m"
