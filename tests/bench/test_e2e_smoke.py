"""The end-to-end benchmark (``dpq bench``, issue 6) still runs, at a tiny size.

A benchmark is not a test: nothing here looks at a rate or a latency. What is
checked is that the run completes on real processes (3-node and 1-node
clusters, producer and consumer processes, the raw-COPY ceiling), that the
JSON holds every number the table prints, and that the counts are right:
every job enqueued was consumed once, PostgreSQL is empty after the drain,
the counters saw the jobs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from dpq.cli.localcluster import PACKAGE_ROOT

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

JOBS = 2000
RATE = 1000
PEAK_RATE = 3000
LOW_RATE = 500
STEADY_S = 2


def _env() -> dict[str, str]:
    # The children import the dpq this test imported (a checkout or site-packages).
    return dict(os.environ, PYTHONPATH=PACKAGE_ROOT)


@pytest.fixture(scope="module")
def run(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("e2e") / "e2e.json"
    cmd = [sys.executable, "-m", "dpq.bench.e2e", "--jobs", str(JOBS), "--rate", str(RATE),
           "--peak-rate", str(PEAK_RATE), "--low-rate", str(LOW_RATE),
           "--steady-seconds", str(STEADY_S), "--copy-batches", "100,1000", "--copy-rounds", "1",
           "--dsn", pg_dsn, "--json", str(out), "--no-progress", "--stall-seconds", "30",
           "--phase-timeout", "90", "--metrics", "on"]
    proc = subprocess.run(cmd, check=False, env=_env(), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, cwd=out.parent)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(out.read_text()), proc.stdout


def test_the_table_is_printed(run: tuple[dict, str]) -> None:
    _, stdout = run
    for heading in ("throughput, jobs/s", "ceiling: raw COPY", "latency, ms, steady state",
                    "CPU seconds per 1,000 jobs", "batch sizes", "checks, 3 nodes"):
        assert heading in stdout


def test_machine_options_and_postgres_are_recorded(run: tuple[dict, str]) -> None:
    result, _ = run
    assert "error" not in result
    assert {"platform", "cpus", "python", "load_before", "load_after"} <= set(result["machine"])
    assert result["options"]["jobs"] == JOBS and result["options"]["seed"] == 42
    assert result["options"]["dsn"] == "(given)"  # never the DSN itself
    pg = result["postgres"]
    assert pg["synchronous_commit"] and pg["fsync"] and pg["version"]
    assert pg["postmaster_pid"]  # the test server runs here: its CPU is measured


@pytest.mark.parametrize("name", ["3-node", "1-node"])
def test_every_job_went_through_once(run: tuple[dict, str], name: str) -> None:
    r = run[0]["runs"][name]
    enq, con = r["enqueue"], r["consume"]
    assert enq["jobs"] == enq["distinct_ids"] == JOBS
    assert enq["pg_rows_after"] == JOBS  # PostgreSQL caught up with the filled queue
    assert enq["calls"] == enq["call_latency"]["n"] > 0
    assert con["jobs"] == sum(con["per_consumer"]) == JOBS
    checks = r["checks"]
    assert checks["enqueued"] == checks["delivered"] == checks["delivered_distinct"] == JOBS
    assert checks["acked"] == JOBS
    for zero in ("missing", "unexpected", "duplicate_deliveries", "ack_errors", "enqueue_errors",
                 "pg_rows_after_drain"):
        assert checks[zero] == 0, zero
    for phase in (enq, con):
        assert phase["jobs_per_s"] > 0 and phase["seconds"] > 0
        assert phase["pg_caught_up_s"] is not None


@pytest.mark.parametrize("name", ["3-node", "1-node"])
def test_counters_and_cpu_saw_the_jobs(run: tuple[dict, str], name: str) -> None:
    r = run[0]["runs"][name]
    enq, con = r["enqueue"], r["consume"]
    assert enq["counters"]["gateway"]["gateway.jobs"] == JOBS
    assert enq["counters"]["total"]["writer.rows"] >= JOBS
    assert enq["counters"]["batch_sizes"]["gateway_jobs_per_proposal"] > 0
    assert con["counters"]["total"]["dispatcher.delivered"] >= JOBS
    for phase in (enq, con):
        assert phase["counters"]["total"]["paxos.syncs"] > 0
        assert len(phase["counters"]["per_node"]) == r["nodes"]
        sizes = phase["counters"]["batch_sizes"]
        assert sizes["paxos_entries_per_sync"] > 0 and sizes["writer_rows_per_transaction"] > 0
        cpu = phase["cpu_per_1000_jobs"]
        for kind in ("gateway", "postgres", "driver"):  # /proc counts 10-ms ticks: may read 0
            assert cpu[kind] >= 0, kind
        assert cpu["nodes"] > 0 and cpu["total"] > 0
    assert enq["cpu_per_1000_jobs"]["producers"] > 0
    assert con["cpu_per_1000_jobs"]["consumers"] > 0


def test_steady_state_latencies_cover_every_job(run: tuple[dict, str]) -> None:
    st = run[0]["runs"]["3-node"]["steady"]
    jobs = RATE * STEADY_S
    assert st["offered_rate"] == RATE
    assert st["scheduled"] == st["offered"] == st["enqueued"] == jobs
    assert st["checks"]["delivered_distinct"] == jobs and st["checks"]["missing"] == 0
    for key in ("enqueue_latency", "e2e_from_return", "e2e_from_send"):
        summary = st[key]
        assert summary["n"] == jobs
        assert summary["p50"] <= summary["p99"] <= summary["p999"] <= summary["max"]
    assert st["enqueue_latency"]["min"] >= 0  # counted from the scheduled time, never before it
    assert st["delivered_per_s"] > 0 and st["cpu_per_1000_jobs"]["producers"] > 0
    assert "steady" not in run[0]["runs"]["1-node"]  # only with --single-node-steady
    assert "steady_low" not in run[0]["runs"]["1-node"]


def test_the_low_rate_phase_reports_latencies_cores_and_order(run: tuple[dict, str]) -> None:
    result, stdout = run
    low = result["runs"]["3-node"]["steady_low"]
    jobs = LOW_RATE * STEADY_S
    assert low["offered_rate"] == LOW_RATE and low["enqueued"] == jobs
    assert low["checks"]["missing"] == 0 and low["checks"]["duplicate_deliveries"] == 0
    assert low["enqueue_latency"]["n"] == low["e2e_from_return"]["n"] == jobs
    assert low["cpu_cores"]["nodes"] > 0 and low["cpu_window_s"] > 0
    assert low["messages_per_job"]["producer_requests"] > 0
    for key in ("steady_peak", "steady", "steady_low"):
        order = result["runs"]["3-node"][key]["ordering"]
        assert order["deliveries"] == result["runs"]["3-node"][key]["checks"]["delivered_distinct"]
        assert 0 <= order["out_of_order"] <= order["deliveries"]
        assert order["aging_step_ms"] == 5000 and 0 <= order["share_by_priority"] <= 1
    assert "latency, ms, low rate at 500 jobs/s" in stdout
    assert "out of order" in stdout and "nodes, cores" in stdout


def test_the_steady_peak_runs_before_the_latency_run(run: tuple[dict, str]) -> None:
    result, stdout = run
    peak = result["runs"]["3-node"]["steady_peak"]
    assert peak["offered_rate"] == PEAK_RATE and peak["seconds"] == STEADY_S
    assert peak["checks"]["missing"] == 0 and peak["checks"]["duplicate_deliveries"] == 0
    assert 0 < peak["delivered_per_s"] <= peak["offered"] / STEADY_S
    assert "steady peak: delivered in the window" in stdout


def test_ceilings_and_fractions(run: tuple[dict, str]) -> None:
    result = run[0]
    copy = result["ceilings"]["copy"]
    assert set(copy) == {"plain", "indexed"}
    for sizes in copy.values():
        assert set(sizes) == {"100", "1000"}
        for m in sizes.values():
            assert m["rows_per_s"] > 0 and m["rows"] >= 1000 and len(m["rounds"]) == 1
    f = result["fractions"]
    assert f["enqueue_3n_over_1n"] > 0 and f["consume_3n_over_1n"] > 0
    assert f["replication_cost_enqueue"] == pytest.approx(1 - f["enqueue_3n_over_1n"])
    for name in ("3-node", "1-node"):
        assert all(v > 0 for sizes in f["enqueue_vs_copy"][name].values() for v in sizes.values())


@pytest.mark.parametrize("cmd", [
    [sys.executable, str(Path(__file__).resolve().parents[2] / "bench" / "e2e.py"), "--help"],
    [sys.executable, "-m", "dpq.cli", "bench", "--help"],
], ids=["bench/e2e.py", "dpq bench"])
def test_entry_points(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, check=False, env=_env(), capture_output=True, text=True, timeout=60,
                          cwd=tempfile.gettempdir())
    assert proc.returncode == 0, proc.stderr
    assert "--steady-seconds" in proc.stdout and "--json" in proc.stdout


def test_repeat_reports_the_medians_of_its_runs(pg_dsn: str, tmp_path) -> None:
    out = tmp_path / "e2e.json"
    cmd = [sys.executable, "-m", "dpq.bench.e2e", "--jobs", "400", "--repeat", "2",
           "--steady-seconds", "0", "--skip-copy", "--skip-single-node", "--dsn", pg_dsn,
           "--json", str(out), "--no-progress", "--stall-seconds", "30", "--phase-timeout", "60"]
    proc = subprocess.run(cmd, check=False, env=_env(), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    result = json.loads(out.read_text())
    each = result["repeat"]["each"]
    assert result["repeat"]["runs"] == len(each) == 2
    rates = sorted(r["runs"]["3-node"]["enqueue"]["jobs_per_s"] for r in each)
    assert result["runs"]["3-node"]["enqueue"]["jobs_per_s"] == sum(rates) / 2
    assert result["runs"]["3-node"]["checks"]["missing"] == 0
    assert "medians of 2 runs" in proc.stdout


@pytest.mark.parametrize("name", ["3-node", "1-node"])
def test_metrics_were_served_and_scraped_throughout(run: tuple[dict, str], name: str) -> None:
    m = run[0]["runs"][name]["metrics"]
    assert m["scrapes"] > 0 and m["errors"] == 0
    assert m["bytes_per_round"] > 0
