"""One job as every replica holds it, and the states it goes through.

See :mod:`dpq.queue.state` for the life cycle. Plain data: no I/O.
"""

from __future__ import annotations

from enum import IntEnum

# What a job costs beyond its payload, in bytes of RSS, measured with
# bench/bench_held_bytes.py (1,000,000 jobs through QueueState.apply, every one
# also in this node's OwnedJobs heap; CPython 3.11, x86_64): 425 B per ready
# job, 631 B per leased one (receipt, deadline, lease heap entry), measured
# again on 2026-11-30 after jobs gained their dedup key, last error and cancel
# flag and the state its queue-lag tracker and counts (before: 377 and 479 B).
# That covers the Job object and its ints, the jobs dict, the touched maps, the
# remembered results and the derived trackers; rounded up from the leased figure.
JOB_OVERHEAD = 650
#: A remembered dedup key beyond its characters (dict entry, tuples, expiry
#: heap): 256-character keys measured 562 B per job more than none.
DEDUP_OVERHEAD = 300
#: A queue beyond its name (counters, interned name, the owner's FastHeap):
#: measured 4,186 B with 100,000 queues.
QUEUE_OVERHEAD = 4500
#: A queue's settings beyond its name and fairness keys (64 B more per key).
CONFIG_OVERHEAD = 1000


class JobState(IntEnum):
    READY = 0
    LEASED = 1
    DEAD = 2
    #: Acked: the job is no longer in the state machine. Only observers see it.
    GONE = 3
    #: Removed by CancelJobs; the newest cancelled jobs are kept for RetryJobs.
    CANCELLED = 4


class Job:
    """One job as every replica holds it."""

    __slots__ = (  # in constructor order, which as_tuple follows
        "job_id",
        "queue",
        "priority",
        "payload",
        "created_at_us",
        "ready_at_us",
        "attempt",
        "state",
        "owner",
        "lease_expires_at_us",
        "consumer_id",
        "receipt",
        "dedup_key",
        "last_error",
        "cancel_requested",
        "fairness_key",
    )

    def __init__(
        self,
        job_id: int,
        queue: str,
        priority: int,
        payload: bytes,
        created_at_us: int,
        ready_at_us: int,
        owner: int,
        attempt: int = 0,
        state: JobState = JobState.READY,
        lease_expires_at_us: int = 0,
        consumer_id: str = "",
        receipt: int = 0,
        dedup_key: str = "",
        last_error: str = "",
        cancel_requested: bool = False,
        fairness_key: str = "",
    ) -> None:
        self.job_id = job_id
        self.queue = queue
        self.priority = priority
        self.payload = payload
        self.created_at_us = created_at_us
        self.ready_at_us = ready_at_us
        self.owner = owner
        self.attempt = attempt
        self.state = state
        self.lease_expires_at_us = lease_expires_at_us
        self.consumer_id = consumer_id
        self.receipt = receipt  # of the current lease; 0 when not leased
        self.dedup_key = dedup_key  # as enqueued, for selectors (kept past the dedup window)
        self.last_error = last_error  # of the last nack (or expiry)
        # CancelJobs found it leased: cancelled when the lease ends without an ack
        self.cancel_requested = cancel_requested
        self.fairness_key = fairness_key  # its tenant: turns within a priority go by weight

    def copy(self) -> Job:
        """A detached copy (the writer keeps one while the state moves on)."""
        return Job(self.job_id, self.queue, self.priority, self.payload, self.created_at_us,
                   self.ready_at_us, self.owner, self.attempt, self.state,
                   self.lease_expires_at_us, self.consumer_id, self.receipt, self.dedup_key,
                   self.last_error, self.cancel_requested, self.fairness_key)

    def as_tuple(self) -> tuple:
        return tuple(getattr(self, name) for name in Job.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and self.as_tuple() == other.as_tuple()

    def __repr__(self) -> str:
        return (
            f"Job(#{self.job_id} {self.queue!r} p{self.priority} {self.state.name} "
            f"attempt={self.attempt} owner={self.owner} ready_at={self.ready_at_us})"
        )
