"""The metrics' catalogue, the queue collector on a state machine, and the endpoint, in process.

The real processes are scraped in ``test_metrics.py``.
"""

from __future__ import annotations

import asyncio
import re
from unittest import mock

from prometheus_client.parser import text_string_to_metric_families
from support.commands import MS, Log, enqueue, lease

from dpq.buckets import Buckets
from dpq.node import metrics as node_metrics
from dpq.services import metrics
from dpq.v1 import queue_pb2


def samples(families) -> dict[tuple[str, tuple], float]:
    """``(sample name, sorted labels) -> value`` of what the families export."""
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.Collector(lambda: families))
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_the_docstring_table_lists_exactly_the_catalogue():
    rows = re.findall(r"^(dpq_\w+)\s+(counter|gauge|histogram)\s+([\w, ]*?)\s+(node|gateway|both)$",
                      metrics.__doc__, flags=re.MULTILINE)
    table = [(name, kind, tuple(x.strip() for x in labels.split(",") if x.strip()), where)
             for name, kind, labels, where in rows]
    assert table == [(f.name, f.kind, f.labels, f.where) for f in metrics.CATALOGUE]
    for f in metrics.CATALOGUE:  # conventional names
        assert f.name.startswith("dpq_") and f.help
        assert f.name.endswith("_total") == (f.kind == "counter"), f.name


def test_queue_counts_depths_and_ages_at_scrape_time():
    log = Log()
    log.run(0, enqueue((1, b""), (1, b""), (3, b"")))
    log.run(10, enqueue(queue_pb2.NewJob(queue="q", priority=2, delay_ms=1000)))
    log.run(50, lease(1))
    got = samples(node_metrics.queue_families(log.state, 500 * MS))
    q = (("priority", "1"), ("queue", "q"))
    assert got[("dpq_jobs_enqueued_total", q)] == 2
    assert got[("dpq_jobs_delivered_total", q)] == 1
    assert got[("dpq_queue_ready_jobs", q)] == 1
    assert got[("dpq_queue_delayed_jobs", (("priority", "2"), ("queue", "q")))] == 1
    assert got[("dpq_queue_leased_jobs", (("queue", "q"),))] == 1
    assert got[("dpq_queue_oldest_ready_age_seconds", q)] == 0.5
    assert got[("dpq_queue_oldest_ready_age_seconds", (("priority", "2"), ("queue", "q")))] == 0
    assert got[("dpq_job_first_delivery_wait_seconds_bucket",
                (("le", "0.05"), ("priority", "1")))] == 1
    assert got[("dpq_job_first_delivery_wait_seconds_sum", (("priority", "1"),))] == 0.05


def test_queues_past_the_label_limit_are_added_up():
    log = Log()
    for at_ms, (name, n) in enumerate((("small1", 1), ("big", 3), ("mid", 2), ("small2", 1))):
        log.run(at_ms, enqueue(*[queue_pb2.NewJob(queue=name, priority=1)] * n))
    with mock.patch.object(node_metrics, "MAX_QUEUE_LABELS", 2):
        got = samples(node_metrics.depth_families(log.state, 100 * MS))
    ready = {dict(labels)["queue"]: v for (name, labels), v in got.items()
             if name == "dpq_queue_ready_jobs" and dict(labels)["priority"] == "1"}
    assert ready == {"big": 3, "mid": 2, metrics.OTHER_QUEUE: 2}
    age = got[("dpq_queue_oldest_ready_age_seconds",
               (("priority", "1"), ("queue", metrics.OTHER_QUEUE)))]
    assert age == 0.1  # the oldest of the two folded queues (small1, enqueued at 0 ms)


def test_histograms_are_cumulative_with_bounds_scaled():
    b = Buckets((1, 10, 100))
    for v in (0, 1, 5, 50, 500, 5000):
        b.observe(v)
    assert b.cumulative(2) == [("0.5", 2), ("5.0", 3), ("50.0", 4), ("+Inf", 6)]
    assert (b.count, b.total) == (6, 5556)


def test_the_endpoint_serves_get_metrics_only():
    async def main():
        endpoint = metrics.MetricsEndpoint(lambda: [metrics.single("dpq_node_held_bytes", 7)],
                                           name="test")
        port = await endpoint.start("127.0.0.1:0")
        try:
            answers = []
            for request in (b"GET /metrics HTTP/1.1\r\n\r\n", b"GET /other HTTP/1.1\r\n\r\n",
                            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                answers.append(await reader.read())
                writer.close()
            return answers
        finally:
            await endpoint.stop()

    ok, missing, post = asyncio.run(main())
    assert ok.startswith(b"HTTP/1.1 200 ") and b"\ndpq_node_held_bytes 7.0\n" in ok
    assert b"Content-Type: text/plain; version=0.0.4" in ok
    assert missing.startswith(b"HTTP/1.1 404 ") and post.startswith(b"HTTP/1.1 405 ")


def test_the_bench_compares_metrics_off_and_on():
    from dpq.bench import _metrics

    run = {"enqueue": {"jobs_per_s": 1000.0}, "consume": {"jobs_per_s": 800.0},
           "steady": {"e2e_from_return": {"p50": 2.0, "p99": 9.0}}}
    on = {**run, "enqueue": {"jobs_per_s": 990.0},
          "metrics": {"scrapes": 40, "errors": 0, "bytes_per_round": 12345, "interval_s": 1.0,
                      "scrape_ms_p50": 1.5}}
    text = _metrics.comparison({"runs": {"3-node": run, _metrics.WITH_METRICS: on}})
    assert "enqueue jobs/s" in text and "1,000.00" in text and "0.990" in text
    assert "scrapes 40 (0 failed)" in text
    assert _metrics.comparison({"runs": {"3-node": run}}) == ""


def test_a_queue_limits_are_exported_beside_its_depths():
    from support.commands import queue_config
    log = Log()
    log.run(0, queue_config("q", max_in_flight=5, max_rate_per_s=2.5))
    log.run(0, enqueue((1, b""), queue_pb2.NewJob(queue="free", priority=1)))
    got = samples(node_metrics.depth_families(log.state, 100 * MS))
    assert got[("dpq_queue_max_in_flight", (("queue", "q"),))] == 5
    assert got[("dpq_queue_max_rate_per_second", (("queue", "q"),))] == 2.5
    assert got[("dpq_queue_max_in_flight", (("queue", "free"),))] == 0
