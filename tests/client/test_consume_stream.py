"""The Consume stream end to end: real nodes, the client library's default path.

A consumer takes every job of a backlog spread over three nodes through their
Consume streams (the nodes' push counters say so), none lost and none twice;
and a bad opening is refused over gRPC with the field named.
"""

from __future__ import annotations

import threading

import grpc
import pytest

from dpq.client import Consumer, JobSpec, Producer
from dpq.v1 import queue_pb2

pytestmark = pytest.mark.slow  # real processes

JOBS = 300


def pushed(cluster) -> tuple[float, float]:
    """Jobs pushed on Consume streams and push messages, summed over the nodes."""
    reports = [cluster.report(i).counters for i in cluster.ids]
    return (sum(r["consume.pushed_jobs"] for r in reports),
            sum(r["consume.pushes"] for r in reports))


def test_a_consumer_takes_a_backlog_over_the_nodes_streams_once_each(cluster, targets, queue,
                                                                      counts):
    with Producer(targets) as producer:
        ids = producer.enqueue_many(JobSpec(b"%d" % i, queue=queue) for i in range(JOBS))
    jobs_before, pushes_before = pushed(cluster)

    handled: list[tuple[int, int]] = []
    lock = threading.Lock()
    with Consumer(targets, queue=queue, wait=1, max_jobs=20) as consumer:
        def handler(job):
            with lock:
                handled.append((job.id, job.attempt))
                if len(handled) >= JOBS:
                    consumer.stop()

        summary = consumer.run(handler, concurrency=4, handle_signals=False)

    assert sorted(i for i, _ in handled) == sorted(ids)  # none lost, none twice
    assert {a for _, a in handled} == {1}
    assert summary.acked == JOBS
    jobs_after, pushes_after = pushed(cluster)
    assert jobs_after - jobs_before == JOBS  # every job came on a stream, not a long-poll
    assert pushes_after - pushes_before < JOBS  # in batches
    assert counts(queue) == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


def test_a_bad_opening_ends_the_stream_with_invalid_argument_naming_the_field(cluster, queue):
    opening = queue_pb2.ConsumeRequest(
        open=queue_pb2.ConsumeOpen(queue=queue, lease_ms=13 * 3600 * 1000), credits=1)
    call = cluster.stub(1).Consume(iter([opening]), timeout=10)
    with pytest.raises(grpc.RpcError) as refused:
        list(call)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == ("open.lease_ms: 46800000 ms is over the limit of "
                                       "43200000 ms")
