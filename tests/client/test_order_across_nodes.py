"""Priority order as a consumer sees it across nodes (issue 13).

A priority-5 job and then a priority-1 job enqueued through one node land on
different nodes (the node spreads new jobs round-robin over the live nodes:
dpq.node.operations); one consumer (the library, and `dpq consume --count
2`) hands out the urgent one first, though node 1's answer may come first.
"""

from __future__ import annotations

import pytest
from support.dpq_up import dpq

from dpq.client import Consumer
from dpq.v1 import queue_pb2

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)


def enqueue_apart(cluster, queue: str) -> tuple[int, int]:
    """``low-one`` (p5), then ``urgent-one`` (p1): consecutive picks of node 2's
    round-robin, so two different owners."""
    [low] = cluster.stub(2).Enqueue(queue_pb2.EnqueueRequest(jobs=[queue_pb2.NewJob(
        queue=queue, priority=5, payload=b"low-one")]), timeout=30).job_ids
    [urgent] = cluster.stub(2).Enqueue(queue_pb2.EnqueueRequest(jobs=[queue_pb2.NewJob(
        queue=queue, priority=1, payload=b"urgent-one")]), timeout=30).job_ids
    return low, urgent


def test_a_consumer_hands_out_the_urgent_job_from_another_node_first(cluster, targets, queue):
    low, urgent = enqueue_apart(cluster, queue)
    with Consumer(targets[0], queue=queue, wait=1, max_jobs=2) as consumer:
        consumer._gather(30)  # as `dpq consume` does: every node's ready jobs are held
        first = consumer.receive(timeout=30)
        second = consumer.receive(timeout=30)
        assert first is not None and second is not None
        assert (first.id, first.text, first.priority) == (urgent, "urgent-one", 1)
        assert (second.id, second.text, second.priority) == (low, "low-one", 5)
        assert first.address != second.address  # they did land on different nodes
        first.ack()
        second.ack()


def test_dpq_consume_prints_the_urgent_job_first(cluster, targets, queue):
    enqueue_apart(cluster, queue)
    done = dpq("consume", "--target", targets[0], "--queue", queue, "--count", "2",
               "--wait", "2s", timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("\t")[-1] for line in lines] == ["urgent-one", "low-one"], done.stdout
    assert [line.split("\t")[1] for line in lines] == ["p1", "p5"]
