"""The ordering figure of the benchmark (dpq.bench._ordering), on hand-made timelines."""

from __future__ import annotations

from dpq.bench import _ordering

MS = 1_000_000


def out_of_order(jobs: dict[int, tuple[int, int]], deliveries: list[tuple[int, int]],
                 aging_step_ns: int) -> dict:
    """``jobs``: id → (priority, enqueue returned at); ``deliveries``: (id, time)."""
    ids = list(jobs)
    return _ordering.out_of_order(ids, [jobs[i][0] for i in ids], [jobs[i][1] for i in ids],
                                  [d[0] for d in deliveries], [d[1] for d in deliveries],
                                  aging_step_ns)


def test_a_less_urgent_job_delivered_while_an_urgent_one_waits_is_counted() -> None:
    # id: (priority, enqueue returned at)
    jobs = {1: (5, 0), 2: (1, 1 * MS), 3: (3, 2 * MS)}
    # At 5 ms job 1 (priority 5) goes out while 2 (priority 1) and 3 wait: out of order.
    # At 6 ms job 2 goes out: the most urgent. At 7 ms job 3: nothing else left.
    got = out_of_order(jobs, [(1, 5 * MS), (2, 6 * MS), (3, 7 * MS)], aging_step_ns=1000 * MS)
    assert got == {"deliveries": 3, "out_of_order": 1, "share": 1 / 3}


def test_in_priority_order_nothing_is_counted() -> None:
    jobs = {1: (5, 0), 2: (1, 1 * MS), 3: (3, 2 * MS)}
    got = out_of_order(jobs, [(2, 5 * MS), (3, 6 * MS), (1, 7 * MS)], aging_step_ns=1000 * MS)
    assert got["out_of_order"] == 0 and got["share"] == 0.0


def test_a_job_not_yet_returned_or_already_delivered_does_not_count() -> None:
    # Job 2 is urgent but its enqueue returns only at 10 ms; job 3 was delivered at 4 ms.
    jobs = {1: (5, 0), 2: (1, 10 * MS), 3: (1, 1 * MS)}
    got = out_of_order(jobs, [(3, 4 * MS), (1, 5 * MS), (2, 11 * MS)], aging_step_ns=1000 * MS)
    assert got["out_of_order"] == 0


def test_aging_makes_an_old_low_priority_job_the_more_urgent() -> None:
    # Step 10 ms: job 1 (priority 2, ready at 0) has key 10 ms; job 2 (priority 1,
    # ready at 20 ms) has key 20 ms. Serving job 2 first while 1 waits is out of order.
    jobs = {1: (2, 0), 2: (1, 20 * MS)}
    assert out_of_order(jobs, [(2, 21 * MS), (1, 22 * MS)], 10 * MS)["out_of_order"] == 1
    assert out_of_order(jobs, [(1, 21 * MS), (2, 22 * MS)], 10 * MS)["out_of_order"] == 0
    # Strict priority (step 0): job 2 first is right.
    assert out_of_order(jobs, [(2, 21 * MS), (1, 22 * MS)], 0)["out_of_order"] == 0


def test_equal_keys_are_not_out_of_order() -> None:
    jobs = {1: (3, 5 * MS), 2: (3, 5 * MS)}
    assert out_of_order(jobs, [(2, 6 * MS), (1, 7 * MS)], MS)["out_of_order"] == 0


def test_redeliveries_count_once_and_unknown_jobs_are_not_judged() -> None:
    jobs = {1: (1, 0), 2: (5, 0)}
    # Job 1 first at 2 ms (then again at 9 ms); job 99's enqueue never returned.
    got = out_of_order(jobs, [(1, 9 * MS), (1, 2 * MS), (99, 3 * MS), (2, 4 * MS)], MS)
    assert got == {"deliveries": 2, "out_of_order": 0, "share": 0.0}
    assert out_of_order({}, [], MS) == {"deliveries": 0, "out_of_order": 0, "share": None}


def test_a_job_never_delivered_stays_ready() -> None:
    jobs = {1: (1, 0), 2: (5, 0), 3: (5, 0)}
    got = out_of_order(jobs, [(2, 2 * MS), (3, 3 * MS)], MS)
    assert got["out_of_order"] == 2 and got["share"] == 1.0


def test_the_aging_step_is_the_nodes_setting() -> None:
    from dpq.bench.e2e import aging_step_ms
    from dpq.node.config import DEFAULT_AGING_STEP_MS

    assert aging_step_ms([]) == DEFAULT_AGING_STEP_MS
    assert aging_step_ms(["--tick-ms=5", "--aging-step-ms=0"]) == 0
    assert aging_step_ms(["--aging-step-ms", "70", "--tick-ms", "5"]) == 70


def test_by_priority_alone_order_within_a_priority_is_not_judged() -> None:
    jobs = {1: (3, 0), 2: (3, 1 * MS), 3: (1, 5 * MS + 500_000)}
    # Job 2 before the older job 1 (same priority): out of order by aged key only.
    # Job 1 while the priority-1 job 3 (ready at 5.5 ms) waits: out of order both ways.
    deliveries = [(2, 5 * MS), (1, 6 * MS), (3, 7 * MS)]
    assert out_of_order(jobs, deliveries, 1000 * MS)["out_of_order"] == 2
    assert out_of_order(jobs, deliveries, None)["out_of_order"] == 1
