"""A node's Prometheus metrics (``--metrics-listen``), read from the node when scraped.

The metrics, their meaning and the endpoint's rules are in
:mod:`dpq.services.metrics`; this module only reads what the node keeps anyway:
the state machine's depths, ages and totals, the Paxos replica and its driver,
the leader's PostgreSQL writer, and the servers' message counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from dpq import clock as clocks
from dpq.node import pglag
from dpq.paxos.core import Role
from dpq.queue.limits import RATE_SCALE
from dpq.queue.rules import PRIORITY_MAX
from dpq.queue.state import QueueState
from dpq.services.metrics import (
    MAX_QUEUE_LABELS,
    OTHER_QUEUE,
    MetricsEndpoint,
    family,
    grpc_families,
    histogram,
    single,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from dpq.node.node import Node

PRIORITIES = [str(p) for p in range(1, PRIORITY_MAX + 1)]


def endpoint(node: Node, wall_us: clocks.WallClock = clocks.wall_us) -> MetricsEndpoint:
    """The node's ``/metrics`` (not started)."""
    return MetricsEndpoint(lambda: collect(node, wall_us()),
                           name=f"node {node.config.node_id} metrics")


def collect(node: Node, now_us: int) -> Iterator[Metric]:
    yield from queue_families(node.state, now_us)
    yield single("dpq_schedules", len(node.state.schedules))
    yield single("dpq_node_held_bytes", node.state.held_bytes)
    yield single("dpq_node_waiting_consumers", node.dispatcher.waiting)
    yield single("dpq_node_loop_stall_max_seconds", node.loopwatch.max_stall_ms / 1000)
    yield from paxos_families(node)
    yield from writer_families(node)
    yield from grpc_families(server.messages for server in node.servers())


def queue_families(state: QueueState, now_us: int) -> Iterator[Metric]:
    """Counts since start (``state.totals``), and depths and ages now, per queue."""
    totals = state.totals
    by_priority = {name: family(name) for name in (
        "dpq_jobs_enqueued_total", "dpq_jobs_delivered_total", "dpq_jobs_acked_total")}
    by_queue = {name: family(name) for name in (
        "dpq_jobs_nacked_total", "dpq_jobs_expired_total", "dpq_jobs_dead_total",
        "dpq_jobs_cancelled_total")}
    for queue, t in sorted(totals.queues.items()):
        for name, counts in (("dpq_jobs_enqueued_total", t.enqueued),
                             ("dpq_jobs_delivered_total", t.delivered),
                             ("dpq_jobs_acked_total", t.acked)):
            for priority, n in zip(PRIORITIES, counts):
                by_priority[name].add_metric([queue, priority], n)
        for name, n in (("dpq_jobs_nacked_total", t.nacked),
                        ("dpq_jobs_expired_total", t.expired),
                        ("dpq_jobs_dead_total", t.died),
                        ("dpq_jobs_cancelled_total", t.cancelled)):
            by_queue[name].add_metric([queue], n)
    yield from by_priority.values()
    yield from by_queue.values()
    yield from depth_families(state, now_us)
    yield histogram("dpq_job_first_delivery_wait_seconds",
                    (((p,), b) for p, b in zip(PRIORITIES, totals.first_wait)), per=1e6)


def depth_families(state: QueueState, now_us: int) -> Iterator[Metric]:
    rows = []  # (queue, ready[], delayed[], leased, dead, ages_us[], paused, in flight, rate)
    for queue in state.queues():
        ready, _, leased, dead = state.stats(queue, now_us)
        counts = state.counts.get(queue)
        delayed = list(counts.delayed_by_priority) if counts is not None else [0] * len(ready)
        ages = [state.ages.age_us(queue, p, now_us) for p in range(1, PRIORITY_MAX + 1)]
        limits = state.configs.get(queue)
        rows.append((queue, ready, delayed, leased, dead, ages,
                     int(state.is_paused(queue, now_us)),
                     limits.max_in_flight if limits is not None else 0,
                     limits.rate_mjps / RATE_SCALE if limits is not None else 0))
    if len(rows) > MAX_QUEUE_LABELS:  # the biggest keep their names, the rest add up
        rows.sort(key=lambda r: -(sum(r[1]) + sum(r[2]) + r[3] + r[4]))
        rows = rows[:MAX_QUEUE_LABELS] + [_fold(rows[MAX_QUEUE_LABELS:])]
    ready_f, delayed_f, age_f = (family("dpq_queue_ready_jobs"), family("dpq_queue_delayed_jobs"),
                                 family("dpq_queue_oldest_ready_age_seconds"))
    leased_f, dead_f, paused_f = (family("dpq_queue_leased_jobs"), family("dpq_queue_dead_jobs"),
                                  family("dpq_queue_paused"))
    in_flight_f, rate_f = family("dpq_queue_max_in_flight"), family("dpq_queue_max_rate_per_second")
    for queue, ready, delayed, leased, dead, ages, paused, in_flight, rate in rows:
        for i, priority in enumerate(PRIORITIES):
            ready_f.add_metric([queue, priority], ready[i])
            delayed_f.add_metric([queue, priority], delayed[i])
            age_f.add_metric([queue, priority], ages[i] / 1e6)
        leased_f.add_metric([queue], leased)
        dead_f.add_metric([queue], dead)
        paused_f.add_metric([queue], paused)
        in_flight_f.add_metric([queue], in_flight)
        rate_f.add_metric([queue], rate)
    yield from (ready_f, delayed_f, leased_f, dead_f, age_f, paused_f, in_flight_f, rate_f)


def _fold(rows: list) -> tuple:
    """The queues past the label limit as one: depths added up, the oldest age kept."""
    n = PRIORITY_MAX
    return (OTHER_QUEUE,
            [sum(r[1][i] for r in rows) for i in range(n)],
            [sum(r[2][i] for r in rows) for i in range(n)],
            sum(r[3] for r in rows), sum(r[4] for r in rows),
            [max(r[5][i] for r in rows) for i in range(n)],
            max(r[6] for r in rows), 0, 0)  # limits of several queues do not add up


def paxos_families(node: Node) -> Iterator[Metric]:
    replica, driver = node.replica, node.driver
    status = replica.status()
    roles = family("dpq_paxos_role")
    for role in Role:
        roles.add_metric([role.value], int(status.role is role))
    yield roles
    yield single("dpq_paxos_leader_id", status.leader_hint or 0)
    yield single("dpq_paxos_ballot_round", status.promised.round)
    yield single("dpq_paxos_commit_slot", status.commit)
    yield single("dpq_paxos_applied_slot", node.state.applied_slot)
    yield single("dpq_paxos_fsyncs_total", driver.syncs)
    yield histogram("dpq_paxos_fsync_seconds", [((), driver.sync_seconds)])
    yield histogram("dpq_paxos_fsync_entries", [((), driver.sync_entries)])
    yield single("dpq_paxos_elections_total", replica.campaigns)
    yield single("dpq_paxos_elections_won_total", replica.campaigns_won)
    yield single("dpq_paxos_leader_changes_total", driver.leader_changes)


def writer_families(node: Node) -> Iterator[Metric]:
    duties = node.leader_duties
    yield single("dpq_writer_lag_slots", pglag.lag_slots(node.state))
    yield single("dpq_writer_lag_seconds", duties.lag_seconds())
    yield single("dpq_writer_transactions_total", duties.transactions)
    yield single("dpq_writer_rows_total", duties.rows)
    yield histogram("dpq_writer_transaction_rows", [((), duties.transaction_rows)])
    yield single("dpq_writer_errors_total", duties.errors)
