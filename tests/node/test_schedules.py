"""Periodic jobs (issue 16) on real dpq-node processes and PostgreSQL.

Exactly one job per tick across a leader SIGKILL (ticks missed while the cluster
elects a new leader run late, none twice), one catch-up job after the whole
cluster was down for many intervals, and ``dpq schedule add|list|rm`` against
real nodes. The jobs are left in their queue (nobody consumes them), so the
queue holds exactly one job per tick that fired.
"""

from __future__ import annotations

import io
import json
import time
from contextlib import redirect_stdout

import grpc
import psycopg
import pytest
from support.cluster import Cluster, wait_until

from dpq.cli.main import main as dpq_main
from dpq.v1 import queue_pb2 as pb

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

T = 15  # seconds: every RPC's deadline
S_US = 1_000_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database):
    root = tmp_path_factory.mktemp("schedules")
    with Cluster(root, pg_database("schedules"), args=("--dead-after-ms", "1500")) as c:
        c.wait_leader(timeout_s=60)
        yield c


def follower(cluster: Cluster) -> int:
    leader = cluster.wait_leader(timeout_s=60)
    return next(i for i in cluster.procs if i != leader)


def create(stub, name, queue, **kw) -> pb.Schedule:
    return stub.CreateSchedule(pb.CreateScheduleRequest(
        schedule=pb.Schedule(name=name, queue=queue, priority=2, payload=b"tick", **kw)),
        timeout=T)


def schedule_of(stub, name) -> pb.Schedule:
    found = [s for s in stub.ListSchedules(pb.ListSchedulesRequest(), timeout=T).schedules
             if s.name == name]
    assert len(found) == 1, found
    return found[0]


def jobs_of(stub, queue) -> list[pb.JobInfo]:
    page = stub.ListJobs(pb.ListJobsRequest(queue=queue, limit=1000, with_payload=True), timeout=T)
    assert not page.next_page_token
    return list(page.jobs)


def any_stub(cluster: Cluster, call):
    """``call(stub)`` on the first running node that answers (one may be dead)."""
    def attempt():
        for i in sorted(cluster.procs):
            try:
                return call(cluster.stub(i))
            except grpc.RpcError:
                continue
        return None
    return wait_until(attempt, 60, "a node that answers")


def test_one_job_per_tick_across_a_leader_kill(cluster):
    """Every 1 s for 10 s, the leader SIGKILLed at about 5 s: 10 ± 1 jobs, every nominal
    tick fired once (none twice, none skipped: the gap is under the 5 s grace)."""
    queue = "every-second"
    stub = cluster.stub(follower(cluster))
    start = (time.time_ns() // 1000 // S_US + 2) * S_US  # on a whole second, 1-2 s ahead
    made = create(stub, "every-second", queue, every_ms=1000, start_at=start)
    assert made.version > 0 and made.next_fire_at_us == start
    wait_until(lambda: time.time_ns() // 1000 >= start + 5 * S_US, 20, "5 s of ticks")
    leader = cluster.wait_leader(timeout_s=60)
    cluster.kill(leader)
    wait_until(lambda: time.time_ns() // 1000 >= start + 9 * S_US + 500_000, 20, "the 10 s")
    any_stub(cluster, lambda s: s.DeleteSchedule(pb.DeleteScheduleRequest(name="every-second"),
                                                 timeout=T))
    cluster.start(leader)
    survivor = cluster.stub(next(i for i in sorted(cluster.procs) if i != leader))
    jobs = jobs_of(survivor, queue)
    assert 9 <= len(jobs) <= 11, [j.job_id for j in jobs]
    assert len({j.job_id for j in jobs}) == len(jobs)
    assert all((j.priority, j.payload) == (2, b"tick") for j in jobs)
    # one job per nominal second: the jobs are as many as the seconds from the start to
    # the last one (none twice), and each was created at or after its own tick
    created = sorted(j.created_at_us for j in jobs)
    assert created[0] >= start
    for n, at in enumerate(created):
        assert at >= start + n * S_US, (n, at - start)
    owners = {j.owner_node for j in jobs}
    assert len(owners) >= 2, owners  # the ticker spreads the jobs over live nodes


def test_a_full_cluster_restart_gives_one_catch_up_job(cluster):
    """Every 1 s; the whole cluster down for 12 s: after the restart one catch-up job
    (the tick due when it went down), then one per second on the grid, not a burst."""
    queue = "catch-up"
    stub = cluster.stub(follower(cluster))
    create(stub, "catch-up", queue, every_ms=1000)
    wait_until(lambda: schedule_of(stub, "catch-up").fired >= 2, 30, "two ticks")
    for i in sorted(cluster.procs):
        cluster.stop(i)
    down_at = time.time_ns() // 1000
    time.sleep(12)  # 12 intervals, over twice the 5 s catch-up grace
    cluster.start()
    stub = cluster.stub(cluster.wait_leader(timeout_s=60))
    before = len([j for j in jobs_of(stub, queue) if j.created_at_us < down_at])
    assert before >= 2

    def caught_up():
        s = schedule_of(stub, "catch-up")
        return s if s.fired > before else None

    first = wait_until(caught_up, 60, "the catch-up tick")
    assert first.fired == before + 1
    assert first.last_fire_at_us < down_at + S_US  # the tick due when the cluster went down
    resumed = first.next_fire_at_us
    assert resumed > down_at + 12 * S_US  # the missed ones are skipped
    wait_until(lambda: schedule_of(stub, "catch-up").last_fire_at_us >= resumed + 2 * S_US,
               30, "three ticks after the catch-up")
    stub.DeleteSchedule(pb.DeleteScheduleRequest(name="catch-up"), timeout=T)
    after = [j for j in jobs_of(stub, queue) if j.created_at_us >= down_at]
    on_time = [j for j in after if j.created_at_us >= resumed]
    assert len(after) - len(on_time) == 1, [j.created_at_us - down_at for j in after]
    assert 3 <= len(on_time) <= 5, [j.created_at_us - resumed for j in on_time]


def run_cli(*argv) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = dpq_main(list(argv))
    return code, out.getvalue()


def test_cli_add_list_rm(cluster, capsys):
    target = cluster.addresses[follower(cluster)]
    code, out = run_cli("schedule", "add", "nightly", "--queue", "reports", "--cron",
                        "0 3 * * *", "--payload", "{}", "--priority", "4", "--target", target)
    assert code == 0 and "schedule 'nightly': cron 0 3 * * * into queue reports" in out, out
    code, out = run_cli("schedule", "add", "ping", "--queue", "pings", "--every", "90s",
                        "--jitter", "5s", "--json", "--target", target)
    assert code == 0
    ping = json.loads(out)
    assert (ping["every"], ping["jitter"], ping["queue"]) == (90.0, 5.0, "pings")
    # a second add of the same name is refused, --replace replaces it
    code = dpq_main(["schedule", "add", "ping", "--queue", "pings", "--every", "1m",
                     "--target", target])
    assert code == 1 and "ALREADY_EXISTS" in capsys.readouterr().err
    code, out = run_cli("schedule", "add", "ping", "--queue", "pings", "--every", "1m",
                        "--replace", "--json", "--target", target)
    assert code == 0 and json.loads(out)["version"] > ping["version"]
    # a bad cron is refused at the edge with the field named
    code = dpq_main(["schedule", "add", "bad", "--queue", "q", "--cron", "* * *",
                     "--target", target])
    assert code == 1 and "schedule.cron" in capsys.readouterr().err
    code, out = run_cli("schedule", "list", "--target", target)
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["name", "queue", "p", "when"]
    assert any(line.startswith("nightly") and "cron 0 3 * * *" in line for line in lines)
    assert any(line.startswith("ping") and "every 1m" in line for line in lines)
    code, out = run_cli("schedule", "list", "--json", "--target", cluster.addresses[
        cluster.wait_leader()])
    names = [s["name"] for s in json.loads(out)]
    assert {"nightly", "ping"} <= set(names) and names == sorted(names)
    code, out = run_cli("schedule", "rm", "ping", "--target", target)
    assert code == 0 and "removed schedule 'ping'" in out
    code, out = run_cli("schedule", "rm", "ping", "--target", target)
    assert code == 0 and "no schedule 'ping'" in out
    code, out = run_cli("schedule", "list", "--json", "--target", target)
    assert "ping" not in [s["name"] for s in json.loads(out)]
    run_cli("schedule", "rm", "nightly", "--target", target)


def test_through_the_gateway(cluster):
    """The gateway checks a schedule and forwards the three RPCs to the leader."""
    cluster.start_gateway_and_wait()
    gw = cluster.gateway_stub()
    made = create(gw, "via-gateway", "gw", every_ms=3_600_000, jitter_ms=1000)
    assert made.version > 0 and made.next_fire_at_us > 0
    with pytest.raises(grpc.RpcError) as refused:
        create(gw, "via-gateway", "gw", every_ms=60_000)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as invalid:
        create(gw, "too-often", "gw", every_ms=999)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "schedule.every_ms: 999" in invalid.value.details()
    assert schedule_of(gw, "via-gateway").jitter_ms == 1000

    def in_postgres():  # the leader's writer keeps the definitions in step
        with psycopg.connect(cluster.dsn) as conn:
            return conn.execute("SELECT queue, every_ms, jitter_ms, version FROM schedules "
                                "WHERE name = 'via-gateway'").fetchall()

    assert wait_until(lambda: in_postgres() == [("gw", 3_600_000, 1000, made.version)], 30,
                      "the schedule in PostgreSQL")
    gone = gw.DeleteSchedule(pb.DeleteScheduleRequest(name="via-gateway"), timeout=T)
    assert gone.existed and gone.slot > made.version
    wait_until(lambda: in_postgres() == [], 30, "the schedule gone from PostgreSQL")
