"""A gateway's Prometheus metrics (``--metrics-listen``), read from the gateway when scraped.

The metrics, their meaning and the endpoint's rules are in
:mod:`dpq.services.metrics`. A gateway holds no queue: it exports what it does
(jobs, proposals, gRPC calls) and how it sees the nodes, each node's balancer
weight and the health inputs the weight is computed from.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from dpq.gateway import balancer
from dpq.services.metrics import MetricsEndpoint, family, grpc_families, single

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from dpq.gateway.app import Gateway


def endpoint(gateway: Gateway) -> MetricsEndpoint:
    """The gateway's ``/metrics`` (not started)."""
    return MetricsEndpoint(lambda: collect(gateway), name="gateway metrics")


def collect(gateway: Gateway) -> Iterator[Metric]:
    monitor, ops = gateway.monitor, gateway.ops
    yield single("dpq_gateway_jobs_total", ops.jobs)
    yield single("dpq_gateway_proposals_total", gateway.proposer.proposals)
    leader = monitor.leader()
    yield single("dpq_gateway_leader_id", (leader.node_id or 0) if leader is not None else 0)
    health = monitor.health()
    weights = dict(zip(*balancer.weights(health)))
    names = ("dpq_gateway_node_weight", "dpq_gateway_node_reachable",
             "dpq_gateway_node_cpu_ratio", "dpq_gateway_node_ready_jobs",
             "dpq_gateway_node_consume_jobs_per_second", "dpq_gateway_node_waiting_consumers",
             "dpq_gateway_node_assigned_jobs_total")
    out = {name: family(name) for name in names}
    for h in sorted(health, key=lambda h: h.node_id):
        node = [str(h.node_id)]
        for name, value in zip(names, (
                weights.get(h.node_id, 0), int(h.reachable), h.cpu_percent / 100,
                h.ready_depth, h.consume_rate, h.waiting_consumers,
                ops.owners.assigned[h.node_id])):
            out[name].add_metric(node, value)
    yield from out.values()
    yield from grpc_families([gateway.server.messages])
