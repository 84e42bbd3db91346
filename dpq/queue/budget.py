"""The memory budget by priority: an overloaded cluster keeps taking urgent work.

Every enqueue is refused with RESOURCE_EXHAUSTED when the jobs it brings would
take the node's memory (``QueueState.held_bytes`` plus the log kept since the
last snapshot) past its priority's share of ``--memory-budget-mb``. The least
urgent priority stops first, so once priority-5 work has filled 80 % of the
budget, priority 1 still has the last fifth to itself:

=========  =====
priority   share
=========  =====
1          100 %
2           95 %
3           90 %
4           85 %
5           80 %
=========  =====

A batch is held to the share of its least urgent job (nothing of a refused
batch is taken). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from dpq.queue.rules import PRIORITY_MAX, PRIORITY_MIN

#: Percent of the budget jobs of each priority may fill (index 0 = priority 1).
SHARE_PERCENT = (100, 95, 90, 85, 80)


def limit_for(priority: int, budget_bytes: int) -> int:
    """The bytes held past which an enqueue of ``priority`` is refused."""
    priority = min(max(priority, PRIORITY_MIN), PRIORITY_MAX)
    return budget_bytes * SHARE_PERCENT[priority - 1] // 100


def least_urgent(jobs: Iterable) -> int:
    """The least urgent priority of ``NewJob`` messages (the one a batch is held to)."""
    return max((job.priority for job in jobs), default=PRIORITY_MIN)


def refusal(held: int, incoming: int, priority: int, budget_bytes: int) -> str | None:
    """Why jobs of ``incoming`` bytes at ``priority`` cannot be taken, or None."""
    limit = limit_for(priority, budget_bytes)
    if held + incoming <= limit:
        return None
    share = SHARE_PERCENT[min(max(priority, PRIORITY_MIN), PRIORITY_MAX) - 1]
    return (f"the jobs and the log since the last snapshot take {held} bytes of memory; "
            f"{incoming} more would pass {limit} bytes, the {share} % of the memory budget "
            f"of {budget_bytes} bytes that priority-{priority} jobs may fill (more urgent "
            "jobs may use more): consume or retry later")
