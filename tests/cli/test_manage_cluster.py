"""``dpq job …`` and ``dpq queue …`` against a real 3-node cluster and its gateway (issue 14):
what a person reads, what ``--json`` gives a script, and refusals as one line."""

from __future__ import annotations

import json

import pytest
from support.cluster import Cluster, wait_until
from support.dpq_up import dpq

from dpq.cli import main
from dpq.client import JobSpec, Producer

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

NODE_ARGS = ("--max-attempts", "2", "--aging-step-ms", "0", "--log-level", "WARNING",
             "--request-log-level", "WARNING")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, pg_database):
    """The gateway address of a 3-node cluster, for the whole module."""
    with Cluster(tmp_path_factory.mktemp("cluster"), pg_database("manage_cli"),
                 args=NODE_ARGS) as c:
        c.wait_leader()
        c.start_gateway_and_wait()
        yield c.gateway_address


@pytest.fixture
def run(gateway, capsys):
    """``run(*argv)`` → (exit code, stdout, stderr) of ``dpq argv --target GATEWAY``."""

    def call(*argv: str) -> tuple[int, str, str]:
        code = main([*argv, "--target", gateway])
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


def enqueue(gateway, queue, payloads, **fields):
    with Producer(gateway) as producer:
        return producer.enqueue_many(JobSpec(p, queue=queue, **fields) for p in payloads)


def as_json(run, *argv):
    code, out, err = run(*argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_show_list_and_explain_for_people_and_scripts(gateway, run):
    ids = enqueue(gateway, "cli-read", ["first", "second"], priority=1)
    [low] = enqueue(gateway, "cli-read", ["low"], priority=5, dedup_key="k-1")

    code, out, err = run("job", "show", str(ids[0]))
    assert code == 0, err
    fields = {line.split("  ")[0]: line.split()[-1] for line in out.splitlines() if "  " in line}
    assert fields["job"] == str(ids[0]) and fields["queue"] == "cli-read"
    assert fields["state"] == "ready" and fields["priority"] == "1"
    assert out.rstrip().endswith("first")  # the payload, last
    shown = as_json(run, "job", "show", str(low))
    assert (shown["job_id"], shown["state"], shown["dedup_key"], shown["payload_text"]) == (
        low, "ready", "k-1", "low")

    code, out, err = run("job", "list", "--queue", "cli-read")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["id", "queue", "p", "state"]
    listed_ids = [int(line.split()[0]) for line in lines[1:]]
    assert sorted(listed_ids[:2]) == ids and listed_ids[2:] == [low]  # priority 1 first
    listed = as_json(run, "job", "list", "--queue", "cli-read", "--priority", "5")
    assert [j["job_id"] for j in listed["jobs"]] == [low] and listed["next_page_token"] == ""
    first = as_json(run, "job", "list", "--queue", "cli-read", "--limit", "2")
    rest = as_json(run, "job", "list", "--queue", "cli-read", "--limit", "2", "--page-token",
                   first["next_page_token"])
    assert len(first["jobs"]) == 2 and [j["job_id"] for j in rest["jobs"]] == [low]

    code, out, err = run("job", "explain", str(low))
    assert code == 0, err
    assert out.startswith(f"job {low} in queue cli-read: ready, priority 5")
    assert "2 in the cluster" in out  # (on its own node: those the balancer put there)
    assert "held by: " in out and "answered by node " in out
    why = as_json(run, "job", "explain", str(low))
    assert why["ahead_in_cluster"] == 2
    assert ("priority_ahead" in why["holds"]) == (why["ahead_on_node"] > 0)
    # nobody consumes cli-read (known when the owner node answered)
    assert ("no_consumers" in why["holds"]) == (why["waiting_consumers"] == 0)
    assert why["waiting_consumers"] in (0, None)


def test_cancel_retry_and_priority_by_ids_and_by_filters(gateway, run):
    ids = enqueue(gateway, "cli-change", ["a", "b", "c"], priority=4)

    code, out, err = run("job", "priority", "1", str(ids[0]), str(ids[1]))
    assert (code, err) == (0, "") and out.startswith("set priority 1 on 2 jobs (log slot ")
    assert as_json(run, "job", "show", str(ids[1]))["priority"] == 1

    code, out, err = run("job", "cancel", "--queue", "cli-change", "--priority", "4")
    assert (code, out.split()[:3]) == (0, ["cancelled", "1", "job"]), err
    done = as_json(run, "job", "cancel", str(ids[0]))
    assert (done["count"], done["deferred"]) == (1, 0) and done["slot"] > 0
    states = {j["job_id"]: j["state"] for j in as_json(run, "job", "list", "--queue",
                                                       "cli-change")["jobs"]}
    assert states == {ids[0]: "cancelled", ids[1]: "ready", ids[2]: "cancelled"}

    code, out, err = run("job", "retry", "--queue", "cli-change", "--state", "cancelled")
    assert code == 0 and out.startswith("retried 2 jobs (ready again)"), err
    assert {j["state"] for j in as_json(run, "job", "list", "--queue", "cli-change")["jobs"]} \
        == {"ready"}


def test_dead_jobs_listed_with_their_error_and_retried(gateway, run):
    from dpq.client import Consumer

    [job_id] = enqueue(gateway, "cli-dead", ["boom"])
    with Consumer(gateway, queue="cli-dead", wait=1) as consumer:
        for _ in range(2):  # --max-attempts 2
            job = consumer.receive(timeout=30)
            assert job is not None and job.id == job_id
            job.nack(error=RuntimeError("disk full"))
    wait_until(lambda: as_json(run, "job", "show", str(job_id))["state"] == "dead", 20,
               "the job dead")
    code, out, err = run("job", "list", "--queue", "cli-dead", "--state", "dead")
    assert code == 0, err
    assert out.splitlines()[1].split()[:4] == [str(job_id), "cli-dead", "3", "dead"]
    assert out.splitlines()[1].endswith("RuntimeError: disk full")
    code, out, err = run("job", "retry", "--queue", "cli-dead", "--state", "dead")
    assert code == 0 and out.startswith("retried 1 job"), err
    assert as_json(run, "job", "show", str(job_id))["state"] == "ready"


def test_pause_resume_and_purge_a_queue(gateway, run):
    code, out, err = run("queue", "pause", "cli-q", "--for", "10m")
    assert code == 0 and out.startswith("queue cli-q paused until "), err
    assert "(in 9m)" in out or "(in 10m)" in out
    paused = as_json(run, "queue", "pause", "cli-q")
    assert paused["paused"] and paused["paused_until"] is None
    [job_id] = enqueue(gateway, "cli-q", ["x"])
    assert "paused" in as_json(run, "job", "explain", str(job_id))["holds"]

    code, out, err = run("queue", "resume", "cli-q")
    assert (code, out.split("(")[0]) == (0, "queue cli-q resumed "), err
    assert as_json(run, "queue", "resume", "cli-q")["was_paused"] is False

    enqueue(gateway, "cli-q", ["y", "z"])
    code, out, err = run("queue", "purge", "cli-q")
    assert code == 1 and "--yes" in err and out == ""
    assert len(as_json(run, "job", "list", "--queue", "cli-q")["jobs"]) == 3
    code, out, err = run("queue", "purge", "cli-q", "--yes")
    assert code == 0 and out.startswith("purged 3 jobs of queue cli-q"), err
    wait_until(lambda: as_json(run, "job", "list", "--queue", "cli-q")["jobs"] == [], 10,
               "the queue empty")


def test_server_refusals_are_its_message_and_exit_1(run):
    code, out, err = run("job", "show", "999999999999")
    assert code == 1 and out == ""
    assert err.startswith("dpq job show: ") and "NOT_FOUND" in err and "Traceback" not in err
    code, out, err = run("job", "priority", "9", "1")
    assert code == 1 and err.startswith("dpq job priority: ") and "INVALID_ARGUMENT" in err
    assert "priority" in err.split(": ", 1)[1]
    code, out, err = run("queue", "pause", "cli-q", "--for", "90d")
    assert code == 1 and "INVALID_ARGUMENT" in err


def test_the_command_runs_as_a_program_with_json(gateway):
    [job_id] = enqueue(gateway, "cli-proc", ["p"])
    result = dpq("job", "list", "--queue", "cli-proc", "--json", "--target", gateway,
                 timeout=120)
    assert result.returncode == 0, result.stderr
    assert [j["job_id"] for j in json.loads(result.stdout)["jobs"]] == [job_id]


def test_queue_config_sets_shows_and_stats_lists_the_limits(gateway, run):
    code, out, err = run("queue", "config", "cli-limits", "--max-in-flight", "50",
                         "--rate", "200/s", "--weight", "acme=3", "--weight", "globex=1")
    assert code == 0, err
    lines = {line.split("  ")[1].strip(): line.split()[-1] for line in out.splitlines()[1:]}
    assert lines["max in flight"] == "50" and lines["rate"] == "200/s"
    assert out.splitlines()[0].startswith("queue cli-limits (log slot ")
    assert "acme=3, globex=1" in out
    shown = as_json(run, "queue", "config", "cli-limits")  # no option: show
    assert shown["max_in_flight"] == 50 and shown["max_rate_per_s"] == 200.0
    assert shown["fairness_weights"] == {"acme": 3, "globex": 1}
    changed = as_json(run, "queue", "config", "cli-limits", "--rate", "30/m",
                      "--weight", "acme=0", "--max-attempts", "4")
    assert changed["max_rate_per_s"] == 0.5 and changed["max_in_flight"] == 50
    assert changed["fairness_weights"] == {"globex": 1} and changed["max_attempts"] == 4
    enqueue(gateway, "cli-limits", ["x"])
    code, out, err = run("stats", "--queue", "cli-limits")
    assert code == 0, err
    assert out.splitlines()[1].endswith("in-flight<=50 0.5/s weights:1 attempts:4"), out
    with pytest.raises(SystemExit) as usage:  # argparse refuses it before connecting
        run("queue", "config", "cli-limits", "--rate", "fast")
    assert usage.value.code == 2
    code, out, err = run("queue", "config", "cli-limits", "--max-attempts", "5000")
    assert code == 1 and "max_attempts: 5000 is outside" in err and "INVALID_ARGUMENT" in err
