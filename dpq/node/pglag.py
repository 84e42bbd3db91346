"""How far PostgreSQL may fall behind the log before new jobs are refused.

While PostgreSQL is down or slow the queue keeps serving from the log, and
the leader's writer catches up when it can. The gap is what PostgreSQL must
take in one go later, and what the state machine keeps track of meanwhile
(the ids of every job touched since the last checkpoint), so it is bounded:
``applied_slot - written_slot`` (``written_slot`` comes from the replicated
Checkpoint commands, so every node knows it) may reach ``limit`` slots, and
then Enqueue answers UNAVAILABLE until the writer has caught up. Acks, leases,
nacks and the rest still pass: they are what drains the queue.
"""

from __future__ import annotations

from dpq.errors import Unavailable
from dpq.proposing.proposer import POSTGRES_BEHIND
from dpq.queue.state import QueueState

#: Default bound, in slots. Normal operation stays far below it (a checkpoint
#: follows every write, every ``writer_interval``); reaching it takes minutes of
#: a PostgreSQL outage under load, or hours under a trickle.
DEFAULT_MAX_LAG_SLOTS = 100_000


def lag_slots(state: QueueState) -> int:
    return max(0, state.applied_slot - state.written_slot)


def check(state: QueueState, limit: int) -> None:
    """Raise :class:`Unavailable` when PostgreSQL is ``limit`` slots or more behind (0: no
    limit)."""
    if not limit:
        return
    lag = lag_slots(state)
    if lag >= limit:
        raise Unavailable(
            f"{POSTGRES_BEHIND} the log by {lag} slots (written up to slot {state.written_slot}, "
            f"applied {state.applied_slot}); the limit is --max-postgres-lag-slots {limit}: new "
            "jobs are refused until the leader's writer catches up (acks and leases still work)",
            None)
