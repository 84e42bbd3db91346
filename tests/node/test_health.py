"""Honest gRPC health (issue 15) on real dpq-node and dpq-gateway processes.

A node says SERVING only once it replayed its log, knows a live leader and caught
up (``dpq.node.readiness``), and NOT_SERVING again when it is cut off from its
quorum; a gateway says SERVING while it knows a leader. "Cut off" is SIGSTOP of
the other nodes (always resumed in a ``finally``). Server reflection answers on
the client ports, so ``grpcurl`` works.
"""

from __future__ import annotations

import os
import re
import signal
from contextlib import contextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from support.cluster import Cluster, wait_until

from dpq.node.readiness import CATCH_UP_SLOTS
from dpq.v1 import queue_pb2

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
QUEUE_SERVICE = "dpq.v1.Queue"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database):
    root = tmp_path_factory.mktemp("health")
    with Cluster(root, pg_database("health"),
                 args=("--dead-after-ms", "1500", "--log-level", "INFO")) as c:
        c.start_gateway_and_wait(90)
        yield c


_channels: dict[str, grpc.Channel] = {}


def health(cluster: Cluster, which: int | str, service: str = "") -> int | None:
    """The health status of node ``which`` (or the ``"gateway"``); None: no answer."""
    address = cluster.gateway_address if which == "gateway" else cluster.addresses[which]
    channel = _channels.get(address)
    if channel is None:
        channel = _channels[address] = cluster.client_channel(address)
    try:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2).status
    except grpc.RpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return None
        raise


def wait_health(cluster: Cluster, which: int | str, status: int, timeout_s: float = 60) -> None:
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    wait_until(lambda: all(health(cluster, which, s) == status for s in ("", QUEUE_SERVICE)),
               timeout_s, f"{which} to report {name}")


def all_serving(cluster: Cluster) -> int:
    """Wait until every node and the gateway serve; the leader."""
    for i in cluster.ids:
        wait_health(cluster, i, SERVING, 90)
    wait_health(cluster, "gateway", SERVING, 90)
    return cluster.wait_leader(30)


@contextmanager
def frozen(cluster: Cluster, ids: list[int]):
    """SIGSTOP nodes ``ids`` for the body; SIGCONT them however it ends."""
    pids = [cluster.procs[i].pid for i in ids]
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_every_process_serves_once_a_leader_is_known(cluster):
    all_serving(cluster)
    # ClusterInfo says so too: through the gateway for every node (from its health
    # reports), and each node for itself
    wait_until(lambda: all(n.serving for n in cluster.gateway_info().nodes), 30,
               "the gateway to report every node serving")
    for i in cluster.addresses:
        assert [n.serving for n in cluster.info(i).nodes if n.node_id == i] == [True]


def test_reflection_lists_the_services_on_the_client_ports(cluster):
    for address in (*cluster.addresses.values(), cluster.gateway_address):
        with cluster.client_channel(address) as channel:
            services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {QUEUE_SERVICE, "grpc.health.v1.Health"} <= services, (address, services)
        assert "dpq.v1.Replication" not in services  # the peer plane only


def test_a_node_started_after_the_others_serves_only_once_caught_up(cluster):
    leader = all_serving(cluster)
    late = max(i for i in cluster.ids if i != leader)
    others = [i for i in cluster.ids if i != late]
    cluster.stop(late)
    # The others commit slots the late node lacks: more than the catch-up bound.
    stub = cluster.stub(leader)
    for n in range(CATCH_UP_SLOTS * 2):
        stub.Enqueue(queue_pb2.EnqueueRequest(jobs=[queue_pb2.NewJob(
            queue="health", priority=3, payload=f"job {n}".encode())]), timeout=10)
    head = cluster.info(leader).nodes[leader - 1].commit_index
    assert head > CATCH_UP_SLOTS * 2
    log = cluster.log_path(late)
    lines_before = len(log.read_text(errors="replace").splitlines())
    with frozen(cluster, others):
        cluster.start(late)
        # It replays its own log and answers, but hears no leader: not serving.
        wait_until(lambda: health(cluster, late) is not None, 60, f"node {late} to answer")
        assert health(cluster, late) == NOT_SERVING
        assert health(cluster, late, QUEUE_SERVICE) == NOT_SERVING
    wait_health(cluster, late, SERVING, 90)
    # When it flipped, its applied slot was within the bound of the leader's commit it
    # had heard of, which is at least what the others committed while it was away.
    new = log.read_text(errors="replace").splitlines()[lines_before:]
    flips = [m for m in (re.search(r"health: SERVING \(node \d+ leads; applied slot (\d+) "
                                   r"of (\d+)\)", line) for line in new) if m]
    assert flips, "\n".join(new[-20:])
    applied, commit = map(int, flips[0].groups())
    assert commit >= head, (commit, head)
    assert applied >= commit - CATCH_UP_SLOTS, (applied, commit)
    assert any("health: NOT_SERVING" in line for line in new)


@pytest.mark.parametrize("who", ["leader", "follower"])
def test_a_node_cut_off_from_its_quorum_stops_serving_and_serves_again(cluster, who):
    leader = all_serving(cluster)
    node = leader if who == "leader" else min(i for i in cluster.ids if i != leader)
    others = [i for i in cluster.ids if i != node]
    with frozen(cluster, others):
        # A leader steps down for lack of quorum, a follower hears no leader: both
        # within an election timeout or two.
        wait_health(cluster, node, NOT_SERVING, 30)
        # The gateway hears from one node, which names no leader.
        wait_health(cluster, "gateway", NOT_SERVING, 30)
    wait_health(cluster, node, SERVING, 90)
    wait_health(cluster, "gateway", SERVING, 90)
    warnings = cluster.log_path(node).read_text(errors="replace")
    assert f"node {node} health: NOT_SERVING (knows no live leader" in warnings


def test_dpq_top_once_names_the_leader(cluster, capsys):
    # In this module for its cluster and gateway (one fewer cluster to start).
    from dpq.cli.main import main

    leader = all_serving(cluster)
    cluster.gateway_stub().Enqueue(queue_pb2.EnqueueRequest(jobs=[queue_pb2.NewJob(
        queue="top-view", priority=2, payload=b"x")]), timeout=10)
    capsys.readouterr()
    assert main(["top", "--once", "--interval", "200ms",
                 "--target", cluster.gateway_address]) == 0
    out = capsys.readouterr().out
    assert f"leader: node {leader} ({cluster.addresses[leader]})" in out, out
    assert "answered by gateway" in out
    for address in cluster.addresses.values():
        assert address in out
    assert out.count("serving") >= 3 and "NOT serving" not in out, out
    row = next(line for line in out.splitlines() if "top-view" in line)
    assert row.split()[2:4] == ["p2", "1"], row
