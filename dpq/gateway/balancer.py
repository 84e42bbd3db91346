"""Turn a node's live health into its weight in the gateway's round-robin.

Every node reports its health at least every 500 ms. The gateway feeds the
reports through :func:`weight` and hands the results to ``dpq._wrr.SmoothWRR``,
which then assigns owners to whole batches of new jobs.

The formula, for a reachable node::

    weight = round(SCALE * cpu * backlog * waiting)

    cpu      = max(min_factor, 1 - cpu_percent / 100)
               a busy node has less CPU left to serve the jobs it is given
    backlog  = max(min_factor, 1 / (1 + drain_s / drain_target_s))
               drain_s = ready_depth / max(consume_rate, min_rate): how long the
               node needs to serve what it already holds (a deep queue relative
               to its consume rate gets less); ``min_rate`` keeps a handful of
               jobs on a node nobody consumes from yet from counting as forever
    waiting  = 1 + waiting_bonus * min(waiting_consumers, waiting_cap)
               long-polls parked on an empty node serve a new job at once

An unreachable node weighs 0 and is never picked. A reachable node weighs at
least 1, so the gateway keeps learning about it (its consumers may come back).
Factors multiply, so a node that is both busy and backlogged falls fast, and
every factor is monotonic in its input: more CPU, a deeper backlog or fewer
waiting consumers never raise a node's weight.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SCALE = 10_000  # fine enough that small factors multiplied together stay apart


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """One node's health report, as the gateway last received it."""

    node_id: int
    reachable: bool = True
    cpu_percent: float = 0.0
    ready_depth: int = 0
    consume_rate: float = 0.0  # jobs per second, recent average
    waiting_consumers: int = 0  # long-polls parked on the node now


@dataclass(frozen=True, slots=True)
class BalancerPolicy:
    """The knobs of the weight formula (see the module docstring)."""

    drain_target_s: float = 1.0
    min_rate: float = 10.0
    waiting_bonus: float = 0.5
    waiting_cap: int = 8
    min_factor: float = 0.05


DEFAULT_POLICY = BalancerPolicy()


def weight(health: NodeHealth, policy: BalancerPolicy = DEFAULT_POLICY) -> int:
    """The node's weight: 0 if unreachable, else at least 1."""
    if not health.reachable:
        return 0
    cpu_used = min(max(health.cpu_percent, 0.0), 100.0) / 100.0
    cpu = max(policy.min_factor, 1.0 - cpu_used)

    depth = max(health.ready_depth, 0)
    rate = max(health.consume_rate, policy.min_rate)
    drain_s = depth / rate
    backlog = max(policy.min_factor, 1.0 / (1.0 + drain_s / policy.drain_target_s))

    waiting = 1.0 + policy.waiting_bonus * min(max(health.waiting_consumers, 0), policy.waiting_cap)
    return max(1, round(SCALE * cpu * backlog * waiting))


def weights(
    reports: Iterable[NodeHealth], policy: BalancerPolicy = DEFAULT_POLICY
) -> tuple[list[int], list[int]]:
    """Node ids (sorted) and their weights, ready for ``SmoothWRR.set_weights``."""
    ordered = sorted(reports, key=lambda h: h.node_id)
    return [h.node_id for h in ordered], [weight(h, policy) for h in ordered]
