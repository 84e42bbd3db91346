"""Fixtures of the client tests: a real 3-node cluster per test module, a queue per test.

The nodes are real ``dpq-node`` processes on a real PostgreSQL
(``tests/support/cluster.py``); the client talks to them over loopback gRPC.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import pytest
from support.cluster import Cluster

from dpq.v1 import queue_pb2

MAX_ATTEMPTS = 5
NODE_ARGS = ("--max-attempts", str(MAX_ATTEMPTS), "--dead-after-ms", "1000",
             "--aging-step-ms", "0", "--log-level", "WARNING", "--request-log-level", "WARNING")


@contextmanager
def _running(root, dsn):
    with Cluster(root, dsn, args=NODE_ARGS) as c:
        try:
            c.wait_leader()
        except AssertionError:
            for i in c.ids:
                print(f"--- node {i}\n{c.log_tail(i)}")
            raise
        yield c


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database, request):
    """A 3-node cluster for the whole test module."""
    dsn = pg_database(request.module.__name__.rpartition(".")[2])
    with _running(tmp_path_factory.mktemp("cluster"), dsn) as c:
        yield c


@pytest.fixture
def fresh_cluster(tmp_path, pg_database):
    """A 3-node cluster for one test (one that kills nodes)."""
    with _running(tmp_path, pg_database("fresh")) as c:
        yield c


@pytest.fixture
def queue(request) -> str:
    """A queue of this test's own."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", request.node.name)[:100]


@pytest.fixture
def targets(cluster) -> list[str]:
    """Every node's address, node 1 first."""
    return [cluster.addresses[i] for i in cluster.ids]


@pytest.fixture
def counts(cluster):
    """``counts(queue, node=None)``: ready / delayed / leased / dead of a queue, as a node
    (by default the lowest running one) sees them."""

    def read(queue: str, node: int | None = None) -> dict[str, int]:
        node = node if node is not None else min(cluster.procs)
        found = cluster.stub(node).Stats(queue_pb2.StatsRequest(queue=queue), timeout=5).queues
        if not found:
            return {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
        s = found[0]
        return {"ready": sum(s.ready_by_priority), "delayed": s.delayed, "leased": s.leased,
                "dead": s.dead}

    return read
