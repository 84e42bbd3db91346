"""A queue's settings and the limits they put on leases: replicated, exact, pure.

``SetQueueConfig`` becomes one ``QueueConfig`` command in the log; every replica
merges it into the queue's :class:`QueueSettings` the same way. The limits are
then enforced where every lease is granted anyway, in ``QueueState._lease``, so
they cost no extra round per lease and hold across nodes and leader changes:

* ``max_in_flight``: a job is granted only while the queue's LEASED jobs (over
  all nodes) are fewer than the limit. A lease stays counted until an Ack, Nack
  or Expire is applied, so the count never undercounts: the limit is exact.
* ``max_rate_per_s`` with ``burst``: a token bucket on the leader's clock (the
  slot stamps), in integer nano-jobs so every replica computes the same. Over
  any window of ``T`` seconds of leader time at most ``burst + rate * T`` jobs
  are granted.

The bucket's level is replicated state (it decides grants), so it is in
snapshots. Nodes read the same numbers (:meth:`QueueSettings.allowance`) to
reserve no more jobs than a Lease could get, and to know when to look again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from dpq.v1 import queue_pb2

#: One job in the bucket's units (nano-jobs): integer arithmetic, the same everywhere.
JOB = 1_000_000_000
#: Rates are kept in milli-jobs per second (1 milli-job/s is 1 nano-job per µs).
RATE_SCALE = 1000
MAX_WEIGHT = 1000
MAX_FAIRNESS_KEYS = 10_000
MAX_IN_FLIGHT = 1_000_000
MAX_RATE_PER_S = 1_000_000.0
MIN_RATE_PER_S = 0.001
MAX_BURST = 1_000_000
MAX_ATTEMPTS = 1000


@dataclass(slots=True)
class QueueSettings:
    """What one queue was configured with, and its token bucket (replicated)."""

    max_in_flight: int = 0  # 0: no limit
    rate_mjps: int = 0  # milli-jobs per second; 0: no limit
    burst: int = 0  # 0: the default (max(1, rate / 10))
    weights: dict[str, int] = field(default_factory=dict)
    default_weight: int = 0  # 0: 1
    max_attempts: int = 0  # 0: the proposer's (the node's --max-attempts)
    slot: int = 0  # the slot that last changed it
    tokens: int = 0  # nano-jobs in the bucket at ``refilled_at_us``
    refilled_at_us: int = 0

    @property
    def limited(self) -> bool:
        return bool(self.max_in_flight or self.rate_mjps)

    @property
    def empty(self) -> bool:
        """Nothing set: the queue behaves as if it had no settings."""
        return not (self.limited or self.weights or self.default_weight or self.max_attempts)

    @property
    def bucket_size(self) -> int:
        """The bucket's capacity in nano-jobs."""
        jobs = self.burst or max(1, self.rate_mjps // (10 * RATE_SCALE))
        return jobs * JOB

    def weight_of(self, key: str) -> int:
        return self.weights.get(key) or self.default_weight or 1

    # ------------------------------------------------------------ token bucket

    def level(self, now_us: int) -> int:
        """Nano-jobs in the bucket at ``now_us`` (not before its last refill)."""
        elapsed = max(0, now_us - self.refilled_at_us)
        return min(self.bucket_size, self.tokens + elapsed * self.rate_mjps)

    def refill(self, now_us: int) -> None:
        if now_us > self.refilled_at_us:
            self.tokens = self.level(now_us)
            self.refilled_at_us = now_us

    # ----------------------------------------------------------------- grants

    def allowance(self, leased: int, now_us: int) -> int:
        """How many more jobs may be leased at ``now_us`` with ``leased`` held (-1: any)."""
        allowed = -1
        if self.max_in_flight:
            allowed = max(0, self.max_in_flight - leased)
        if self.rate_mjps:
            tokens = self.level(now_us) // JOB
            allowed = tokens if allowed < 0 else min(allowed, tokens)
        return allowed

    def take(self, leased: int, now_us: int) -> bool:
        """Grant one lease at ``now_us`` if the limits allow it (the bucket pays for it)."""
        if self.max_in_flight and leased >= self.max_in_flight:
            return False
        if self.rate_mjps:
            self.refill(now_us)
            if self.tokens < JOB:
                return False
            self.tokens -= JOB
        return True

    def next_token_us(self, now_us: int) -> int:
        """When the bucket next holds a whole job (``now_us`` if it does; no rate: 0)."""
        if not self.rate_mjps:
            return 0
        missing = JOB - self.level(now_us)
        if missing <= 0:
            return now_us
        return now_us + -(-missing // self.rate_mjps)

    # --------------------------------------------------------------- changes

    def merged(self, change: queue_pb2.SetQueueConfigRequest, slot: int,
               now_us: int) -> QueueSettings:
        """These settings with ``change`` applied (fields present only), at ``slot``."""
        new = dataclasses.replace(self, weights=dict(self.weights), slot=slot)
        if change.HasField("max_in_flight"):
            new.max_in_flight = change.max_in_flight
        if change.HasField("max_rate_per_s"):
            new.rate_mjps = rate_mjps(change.max_rate_per_s)
        if change.HasField("burst"):
            new.burst = change.burst
        if change.replace_fairness_weights:
            new.weights.clear()
        for entry in change.fairness_weights:
            if entry.weight:
                new.weights[entry.key] = entry.weight
            else:
                new.weights.pop(entry.key, None)
        if change.HasField("default_fairness_weight"):
            new.default_weight = change.default_fairness_weight
        if change.HasField("max_attempts"):
            new.max_attempts = change.max_attempts
        if new.rate_mjps != self.rate_mjps or new.bucket_size != self.bucket_size:
            # A new rate starts with a full bucket of the new size.
            new.tokens, new.refilled_at_us = new.bucket_size, now_us
        return new

    def to_pb(self, queue: str) -> queue_pb2.QueueConfig:
        return queue_pb2.QueueConfig(
            queue=queue, max_in_flight=self.max_in_flight,
            max_rate_per_s=self.rate_mjps / RATE_SCALE, burst=self.burst,
            fairness_weights=[queue_pb2.FairnessWeight(key=k, weight=w)
                              for k, w in sorted(self.weights.items())],
            default_fairness_weight=self.default_weight, max_attempts=self.max_attempts,
            slot=self.slot)

    # -------------------------------------------------------------- snapshots

    def to_json(self) -> dict:
        return {"max_in_flight": self.max_in_flight, "rate_mjps": self.rate_mjps,
                "burst": self.burst, "weights": sorted(self.weights.items()),
                "default_weight": self.default_weight, "max_attempts": self.max_attempts,
                "slot": self.slot, "tokens": self.tokens, "refilled_at_us": self.refilled_at_us}

    @classmethod
    def from_json(cls, data: dict) -> QueueSettings:
        """Raises ValueError (or TypeError, KeyError) for anything that is not one."""
        return cls(
            _bounded(data["max_in_flight"], MAX_IN_FLIGHT),
            _bounded(data["rate_mjps"], rate_mjps(MAX_RATE_PER_S)),
            _bounded(data["burst"], MAX_BURST),
            {str(k): _bounded(w, MAX_WEIGHT) for k, w in data["weights"]},
            _bounded(data["default_weight"], MAX_WEIGHT),
            _bounded(data["max_attempts"], MAX_ATTEMPTS),
            _bounded(data["slot"], 2**63 - 1),
            _bounded(data["tokens"], MAX_BURST * JOB),
            _bounded(data["refilled_at_us"], 2**63 - 1))


def rate_mjps(per_s: float) -> int:
    """A rate in jobs per second as the integer the bucket counts in."""
    return round(per_s * RATE_SCALE)


def problem(change: queue_pb2.SetQueueConfigRequest) -> tuple[str, object, str] | None:
    """``(field, value, limit)`` of the first field of ``change`` out of bounds, or None.

    Shared by the edge (which names it in INVALID_ARGUMENT) and the state machine
    (which refuses such a command the same way on every replica).
    """
    if change.HasField("max_in_flight") and change.max_in_flight > MAX_IN_FLIGHT:
        return "max_in_flight", change.max_in_flight, f"0 (no limit) to {MAX_IN_FLIGHT:,}"
    if change.HasField("max_rate_per_s"):
        rate = change.max_rate_per_s
        if not (rate == 0 or MIN_RATE_PER_S <= rate <= MAX_RATE_PER_S):  # NaN fails too
            return ("max_rate_per_s", rate,
                    f"0 (no limit) or {MIN_RATE_PER_S} to {MAX_RATE_PER_S:,.0f} jobs/s")
    if change.HasField("burst") and change.burst > MAX_BURST:
        return "burst", change.burst, f"0 (default) to {MAX_BURST:,}"
    if len(change.fairness_weights) > MAX_FAIRNESS_KEYS:
        return ("fairness_weights", f"{len(change.fairness_weights)} entries",
                f"at most {MAX_FAIRNESS_KEYS:,}")
    for entry in change.fairness_weights:
        if entry.weight > MAX_WEIGHT:
            return (f"fairness_weights[{entry.key!r}].weight", entry.weight,
                    f"0 (remove) to {MAX_WEIGHT}")
        if len(entry.key.encode()) > 1024:
            return "fairness_weights.key", f"{len(entry.key.encode())} bytes", "1,024 bytes"
    if change.HasField("default_fairness_weight") and change.default_fairness_weight > MAX_WEIGHT:
        return ("default_fairness_weight", change.default_fairness_weight,
                f"0 (1) to {MAX_WEIGHT}")
    if change.HasField("max_attempts") and change.max_attempts > MAX_ATTEMPTS:
        return "max_attempts", change.max_attempts, f"0 (the node's) to {MAX_ATTEMPTS}"
    return None


def _bounded(value, top: int) -> int:
    if type(value) is not int or not 0 <= value <= top:
        raise ValueError(f"{value!r} is not an integer in 0..{top}")
    return value
