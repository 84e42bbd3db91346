"""Merging repeated benchmark runs: medians per figure, the worst run's checks."""

from __future__ import annotations

from dpq.bench._medians import merge


def _run(rate: float, p99: float, missing: int, elected: bool) -> dict:
    return {
        "options": {"jobs": 1000, "dsn": "(given)"},
        "runs": {"3-node": {
            "enqueue": {"jobs_per_s": rate, "call_latency": {"p99": p99}},
            "checks": {"enqueued": 1000, "missing": missing},
            "steady": {"counters": {"ballot_changed": elected}},
        }},
    }


def test_each_figure_is_the_median_of_its_own_runs() -> None:
    merged = merge([_run(30_000, 9.0, 0, False), _run(10_000, 30.0, 0, False),
                    _run(20_000, 1.0, 0, False)])
    enqueue = merged["runs"]["3-node"]["enqueue"]
    assert enqueue["jobs_per_s"] == 20_000
    assert enqueue["call_latency"]["p99"] == 9.0  # not the p99 of the median-rate run
    assert merged["options"] == {"jobs": 1000, "dsn": "(given)"}


def test_a_fault_in_one_run_is_not_voted_away() -> None:
    merged = merge([_run(1, 1, 0, False), _run(1, 1, 3, True), _run(1, 1, 0, False)])
    node = merged["runs"]["3-node"]
    assert node["checks"]["missing"] == 3
    assert node["checks"]["enqueued"] == 1000
    assert node["steady"]["counters"]["ballot_changed"] is True


def test_a_figure_missing_from_some_runs_is_the_median_of_the_others() -> None:
    a, b, c = _run(10, 1, 0, False), _run(20, 1, 0, False), _run(40, 1, 0, False)
    del c["runs"]["3-node"]["enqueue"]["jobs_per_s"]
    assert merge([a, b, c])["runs"]["3-node"]["enqueue"]["jobs_per_s"] == 15
