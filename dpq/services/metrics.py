"""Prometheus metrics: ``GET /metrics`` on ``--metrics-listen HOST:PORT``, node and gateway.

Off by default on ``dpq-node`` and ``dpq-gateway``; ``dpq up`` turns it on at
127.0.0.1:9100 for the gateway and 9101-9103 for the nodes (port-base + 2000
with ``--port-base``), and prints the URLs. Nothing is counted for Prometheus on
a hot path: the processes keep the counters they keep anyway (the state
machine's ``dpq.queue.totals``, the drivers' plain ints and ``dpq.buckets``
histograms), and the collectors read them when scraped, into a private
registry (``prometheus_client``; no default process metrics, no global state).

Security: the endpoint is plain HTTP, read-only (GET /metrics and nothing
else: no job data, no payloads, queue names only) and takes no token, also
when the gRPC ports use TLS. It is off unless asked for; listen on loopback or
a private network that only the Prometheus server reaches.

Aggregating: every node applies the same log, so every node exports the same
queue counts and depths (the cluster's, as its replica applied them, since the
node started): aggregate the ``dpq_jobs_*`` and ``dpq_queue_*`` series of a
cluster with ``max()``, never ``sum()``. A restarted node starts its counts
over (``rate()`` copes); one that catches up by snapshot misses what the
snapshot covered. Per-node series (Paxos, writer, gRPC) sum or compare as usual.

Bounded labels: ``queue`` takes at most 1,000 names (counts: the first 1,000
queues seen; depths: the 1,000 holding most jobs), the rest are added up under
``queue="(other)"`` (no queue can be called that); ``priority`` is 1-5;
``node`` a node id; ``method`` and ``code`` the gRPC methods and status codes.

Every metric (``where``: the process that exports it):

======================================== ========= ===================== ========
name                                     type      labels                where
======================================== ========= ===================== ========
dpq_jobs_enqueued_total                  counter   queue, priority       node
dpq_jobs_delivered_total                 counter   queue, priority       node
dpq_jobs_acked_total                     counter   queue, priority       node
dpq_jobs_nacked_total                    counter   queue                 node
dpq_jobs_expired_total                   counter   queue                 node
dpq_jobs_dead_total                      counter   queue                 node
dpq_jobs_cancelled_total                 counter   queue                 node
dpq_queue_ready_jobs                     gauge     queue, priority       node
dpq_queue_delayed_jobs                   gauge     queue, priority       node
dpq_queue_leased_jobs                    gauge     queue                 node
dpq_queue_dead_jobs                      gauge     queue                 node
dpq_queue_oldest_ready_age_seconds       gauge     queue, priority       node
dpq_queue_paused                         gauge     queue                 node
dpq_queue_max_in_flight                  gauge     queue                 node
dpq_queue_max_rate_per_second            gauge     queue                 node
dpq_schedules                            gauge                           node
dpq_job_first_delivery_wait_seconds      histogram priority              node
dpq_node_held_bytes                      gauge                           node
dpq_node_waiting_consumers               gauge                           node
dpq_node_loop_stall_max_seconds          gauge                           node
dpq_paxos_role                           gauge     role                  node
dpq_paxos_leader_id                      gauge                           node
dpq_paxos_ballot_round                   gauge                           node
dpq_paxos_commit_slot                    gauge                           node
dpq_paxos_applied_slot                   gauge                           node
dpq_paxos_fsyncs_total                   counter                         node
dpq_paxos_fsync_seconds                  histogram                       node
dpq_paxos_fsync_entries                  histogram                       node
dpq_paxos_elections_total                counter                         node
dpq_paxos_elections_won_total            counter                         node
dpq_paxos_leader_changes_total           counter                         node
dpq_writer_lag_slots                     gauge                           node
dpq_writer_lag_seconds                   gauge                           node
dpq_writer_transactions_total            counter                         node
dpq_writer_rows_total                    counter                         node
dpq_writer_transaction_rows              histogram                       node
dpq_writer_errors_total                  counter                         node
dpq_gateway_jobs_total                   counter                         gateway
dpq_gateway_proposals_total              counter                         gateway
dpq_gateway_leader_id                    gauge                           gateway
dpq_gateway_node_weight                  gauge     node                  gateway
dpq_gateway_node_reachable               gauge     node                  gateway
dpq_gateway_node_cpu_ratio               gauge     node                  gateway
dpq_gateway_node_ready_jobs              gauge     node                  gateway
dpq_gateway_node_consume_jobs_per_second gauge     node                  gateway
dpq_gateway_node_waiting_consumers       gauge     node                  gateway
dpq_gateway_node_assigned_jobs_total     counter   node                  gateway
dpq_grpc_requests_total                  counter   method, code          both
dpq_grpc_messages_received_total         counter   method                both
dpq_grpc_messages_sent_total             counter   method                both
======================================== ========= ===================== ========

What each one means is its HELP text, in :data:`CATALOGUE` (and on every scrape).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from dpq.buckets import Buckets
from dpq.services.counting import MessageCounter
from dpq.services.http import HttpServer, Request, Response

#: The text format every Prometheus reads (dpq's names and labels need nothing newer).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Labels of the series of one queue beyond this many are added up under OTHER.
MAX_QUEUE_LABELS = 1000
OTHER_QUEUE = "(other)"


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # as exported (a counter's with its _total)
    kind: str  # counter, gauge, histogram
    labels: tuple[str, ...]
    where: str  # node, gateway, both
    help: str


_F = Family
CATALOGUE: tuple[Family, ...] = (
    _F("dpq_jobs_enqueued_total", "counter", ("queue", "priority"), "node",
       "Jobs enqueued (new job ids; a dedup hit is not counted), as this node's replica "
       "applied the log since the node started (the same on every node: aggregate with max)"),
    _F("dpq_jobs_delivered_total", "counter", ("queue", "priority"), "node",
       "Leases granted (a redelivery counts again), since the node started"),
    _F("dpq_jobs_acked_total", "counter", ("queue", "priority"), "node",
       "Jobs acked (done), since the node started"),
    _F("dpq_jobs_nacked_total", "counter", ("queue",), "node",
       "Leases given back by a consumer's Nack, since the node started"),
    _F("dpq_jobs_expired_total", "counter", ("queue",), "node",
       "Leases that ran out before an ack, since the node started"),
    _F("dpq_jobs_dead_total", "counter", ("queue",), "node",
       "Jobs that went DEAD (out of attempts), since the node started"),
    _F("dpq_jobs_cancelled_total", "counter", ("queue",), "node",
       "Jobs that became CANCELLED (CancelJobs), since the node started"),
    _F("dpq_queue_ready_jobs", "gauge", ("queue", "priority"), "node",
       "READY jobs that are due now (delayed ones are dpq_queue_delayed_jobs)"),
    _F("dpq_queue_delayed_jobs", "gauge", ("queue", "priority"), "node",
       "READY jobs not due yet (enqueued or nacked with a delay)"),
    _F("dpq_queue_leased_jobs", "gauge", ("queue",), "node", "Jobs leased to consumers now"),
    _F("dpq_queue_dead_jobs", "gauge", ("queue",), "node",
       "DEAD jobs held (RetryJobs brings them back)"),
    _F("dpq_queue_oldest_ready_age_seconds", "gauge", ("queue", "priority"), "node",
       "How long the oldest due READY job has waited since it became ready (0: none): "
       "the queue lag, the metric to alert on"),
    _F("dpq_queue_paused", "gauge", ("queue",), "node", "1 while the queue is paused"),
    _F("dpq_queue_max_in_flight", "gauge", ("queue",), "node",
       "The queue's max_in_flight setting (0: no limit)"),
    _F("dpq_queue_max_rate_per_second", "gauge", ("queue",), "node",
       "The queue's max_rate_per_s setting (0: no limit)"),
    _F("dpq_schedules", "gauge", (), "node", "Periodic jobs (schedules) the cluster holds"),
    _F("dpq_job_first_delivery_wait_seconds", "histogram", ("priority",), "node",
       "Wait from ready to first delivery (the lease of attempt 1), by leader time"),
    _F("dpq_node_held_bytes", "gauge", (), "node",
       "Memory the held jobs cost (what --memory-budget-mb limits, the log aside)"),
    _F("dpq_node_waiting_consumers", "gauge", (), "node", "Long-polls parked on this node now"),
    _F("dpq_node_loop_stall_max_seconds", "gauge", (), "node",
       "The longest the event loop was blocked since the node started"),
    _F("dpq_paxos_role", "gauge", ("role",), "node",
       "1 for this node's Paxos role (leader, follower, candidate), 0 for the others"),
    _F("dpq_paxos_leader_id", "gauge", (), "node", "The leader this node knows of (0: none)"),
    _F("dpq_paxos_ballot_round", "gauge", (), "node",
       "The round of the highest ballot this node promised"),
    _F("dpq_paxos_commit_slot", "gauge", (), "node", "The highest slot known committed"),
    _F("dpq_paxos_applied_slot", "gauge", (), "node",
       "The highest slot applied to this node's state machine"),
    _F("dpq_paxos_fsyncs_total", "counter", (), "node", "fsyncs of the write-ahead log"),
    _F("dpq_paxos_fsync_seconds", "histogram", (), "node",
       "Time of one fsync of the write-ahead log (with the hop to its thread)"),
    _F("dpq_paxos_fsync_entries", "histogram", (), "node",
       "Log entries (slots) one fsync made durable (group commit)"),
    _F("dpq_paxos_elections_total", "counter", (), "node",
       "Elections (Paxos phase 1) this node started"),
    _F("dpq_paxos_elections_won_total", "counter", (), "node", "Elections this node won"),
    _F("dpq_paxos_leader_changes_total", "counter", (), "node",
       "Times this node saw the leader change (or become unknown)"),
    _F("dpq_writer_lag_slots", "gauge", (), "node",
       "Applied slots PostgreSQL does not hold yet (applied - written)"),
    _F("dpq_writer_lag_seconds", "gauge", (), "node",
       "On the leader: how long PostgreSQL has lacked applied slots (0 elsewhere)"),
    _F("dpq_writer_transactions_total", "counter", (), "node",
       "PostgreSQL write transactions of this node's writer (while it leads)"),
    _F("dpq_writer_rows_total", "counter", (), "node", "Job rows written to PostgreSQL"),
    _F("dpq_writer_transaction_rows", "histogram", (), "node",
       "Job rows per PostgreSQL write transaction"),
    _F("dpq_writer_errors_total", "counter", (), "node",
       "Failed PostgreSQL connects, migrations and writes (each retried with back-off)"),
    _F("dpq_gateway_jobs_total", "counter", (), "gateway", "Jobs enqueued through this gateway"),
    _F("dpq_gateway_proposals_total", "counter", (), "gateway",
       "Batches this gateway proposed to the leader"),
    _F("dpq_gateway_leader_id", "gauge", (), "gateway", "The leader the nodes name (0: none)"),
    _F("dpq_gateway_node_weight", "gauge", ("node",), "gateway",
       "The node's weight in this gateway's round-robin (0: unreachable)"),
    _F("dpq_gateway_node_reachable", "gauge", ("node",), "gateway",
       "1 while the node's health stream is fresh"),
    _F("dpq_gateway_node_cpu_ratio", "gauge", ("node",), "gateway",
       "The node's busy CPU share (0-1), a weight input"),
    _F("dpq_gateway_node_ready_jobs", "gauge", ("node",), "gateway",
       "Ready jobs the node owns, a weight input"),
    _F("dpq_gateway_node_consume_jobs_per_second", "gauge", ("node",), "gateway",
       "Jobs the node hands to consumers per second (smoothed), a weight input"),
    _F("dpq_gateway_node_waiting_consumers", "gauge", ("node",), "gateway",
       "Long-polls parked on the node, a weight input"),
    _F("dpq_gateway_node_assigned_jobs_total", "counter", ("node",), "gateway",
       "New jobs this gateway gave the node"),
    _F("dpq_grpc_requests_total", "counter", ("method", "code"), "both",
       "Finished gRPC calls with one response, by method and status code (calls that "
       "stream responses are in the message counts only)"),
    _F("dpq_grpc_messages_received_total", "counter", ("method",), "both",
       "gRPC messages received, by method (for a unary method: its calls)"),
    _F("dpq_grpc_messages_sent_total", "counter", ("method",), "both",
       "gRPC messages sent, by method"),
)
BY_NAME = {f.name: f for f in CATALOGUE}


def family(name: str) -> Metric:
    """An empty family of the catalogued metric ``name`` (its type, help and labels)."""
    f = BY_NAME[name]
    if f.kind == "counter":
        return CounterMetricFamily(f.name.removesuffix("_total"), f.help, labels=f.labels)
    if f.kind == "gauge":
        return GaugeMetricFamily(f.name, f.help, labels=f.labels)
    return HistogramMetricFamily(f.name, f.help, labels=f.labels)


def histogram(name: str, series: Iterable[tuple[tuple[str, ...], Buckets]],
              per: float = 1) -> Metric:
    """The catalogued histogram ``name`` from ``(label values, Buckets)`` pairs; bounds and
    sums divided by ``per`` (1e6: microseconds to seconds)."""
    out = family(name)
    for labels, buckets in series:
        out.add_metric(list(labels), buckets.cumulative(per), buckets.total / per)
    return out


def single(name: str, value: float) -> Metric:
    out = family(name)
    out.add_metric([], value)
    return out


def grpc_families(counters: Iterable[MessageCounter]) -> Iterator[Metric]:
    """``dpq_grpc_*`` from the servers' message counters (added up over the servers)."""
    received: dict[str, float] = {}
    sent: dict[str, float] = {}
    codes: dict[tuple[str, str], float] = {}
    for counter in counters:
        for method, n in counter.received.items():
            received[method] = received.get(method, 0) + n
        for method, n in counter.sent.items():
            sent[method] = sent.get(method, 0) + n
        for key, n in counter.codes.items():
            codes[key] = codes.get(key, 0) + n
    out = family("dpq_grpc_requests_total")
    for (method, code), n in sorted(codes.items()):
        out.add_metric([method, code], n)
    yield out
    for name, counts in (("dpq_grpc_messages_received_total", received),
                         ("dpq_grpc_messages_sent_total", sent)):
        out = family(name)
        for method, n in sorted(counts.items()):
            out.add_metric([method], n)
        yield out


class Collector:
    """A ``prometheus_client`` collector whose families come from ``collect`` (a callable
    returning them), called at every scrape."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        yield from self._collect()


class MetricsEndpoint:
    """``GET /metrics`` from ``collect``, on :class:`dpq.services.http.HttpServer`."""

    def __init__(self, collect: Callable[[], Iterable[Metric]], *, name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(collect))
        self._http = HttpServer({("GET", "/metrics"): self._metrics}, name=name)
        self.port = 0

    async def start(self, listen: str) -> int:
        self.port = await self._http.start(listen)
        return self.port

    async def stop(self) -> None:
        await self._http.stop()

    def scrape(self) -> bytes:
        return generate_latest(self.registry)

    async def _metrics(self, request: Request) -> Response:
        return Response(200, self.scrape(), CONTENT_TYPE)
