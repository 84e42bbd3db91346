"""What a proposed batch yields, the same on a node and a gateway, and its wire form.

The results are the state machine's own types (``dpq.queue.results``): a node's
applier hands them on as they are; the leader's Propose handler sends them over
gRPC (:func:`results_to_pb`) and a remote proposer reads them back
(:func:`results_from_pb`) as the same types.
"""

from __future__ import annotations

from typing import NamedTuple

from dpq.errors import Unavailable
from dpq.queue.results import (
    Affected,
    Checkpointed,
    Configured,
    Enqueued,
    Grant,
    Leased,
    Paused,
    Reassigned,
    Refused,
    Result,
    Settled,
    refusal_from_pb,
    refusal_to_pb,
)
from dpq.queue.schedules import ScheduleRemoved, ScheduleSet, Ticked
from dpq.queue.validate import InvalidArgument
from dpq.v1 import replication_pb2

__all__ = ["Applied", "Grant", "Result", "affected", "enqueued", "granted", "not_applied",
           "paused", "reassigned", "results_from_pb", "results_to_pb", "schedule_removed",
           "schedule_set"]


class Applied(NamedTuple):
    slot: int
    results: list[Result] | None  # None: a duplicate whose results are forgotten, or a no-op


def enqueued(result: Result | None) -> list[int]:
    """The job ids of an Enqueue's result; raises what to tell the client otherwise."""
    if isinstance(result, Enqueued):
        return list(result.job_ids)
    raise not_applied(result)


def not_applied(result: Result | None) -> Exception:
    """The exception for a command that has no result of its kind: ``InvalidArgument`` for
    one the state machine refused whole, ``Unavailable`` for one applied earlier whose
    results are forgotten (a retry; what it did stands)."""
    if isinstance(result, Refused):
        return InvalidArgument(str(result))
    if result is None:
        return Unavailable("the batch was committed earlier but its results are no longer "
                           "remembered (what it did stands)", None)
    return TypeError(f"unexpected result {result!r}")


def granted(result: Result | None) -> tuple[Grant, ...]:
    """The grants of a Lease's result; a Lease refused whole (logged by the applier) or
    answered None granted nothing."""
    return result.grants if isinstance(result, Leased) else ()


#: The commands whose result is :class:`Affected`.
_AFFECTING = frozenset({"cancel", "retry", "set_priority", "purge"})


def affected(result: Result | None) -> Affected:
    """What a Cancel, Retry, SetPriority or Purge did; raises what to tell the client
    otherwise."""
    if isinstance(result, Affected):
        return result
    raise not_applied(result)


def paused(result: Result | None) -> Paused:
    """A queue's pause after a Pause or Resume; raises what to tell the client otherwise."""
    if isinstance(result, Paused):
        return result
    raise not_applied(result)


def configured(result: Result | None) -> Configured:
    """A queue's settings after a QueueConfig; raises what to tell the client otherwise."""
    if isinstance(result, Configured):
        return result
    raise not_applied(result)


def schedule_set(result: Result | None) -> ScheduleSet:
    """What a CreateSchedule did; raises what to tell the client otherwise."""
    if isinstance(result, ScheduleSet):
        return result
    raise not_applied(result)


def schedule_removed(result: Result | None) -> ScheduleRemoved:
    """What a DeleteSchedule did; raises what to tell the client otherwise."""
    if isinstance(result, ScheduleRemoved):
        return result
    raise not_applied(result)


def reassigned(result: Result | None) -> int:
    """How many jobs a Reassign moved (0 if it was refused)."""
    return result.count if isinstance(result, Reassigned) else 0


def results_to_pb(results: list[Result] | None) -> list[replication_pb2.CommandResult]:
    return [_to_pb(result) for result in results or ()]


def _to_pb(result: Result) -> replication_pb2.CommandResult:
    item = replication_pb2.CommandResult()
    match result:
        case Refused():
            item.error, item.refusal = str(result), refusal_to_pb(result.reason)
        case Enqueued(job_ids):
            item.job_ids.extend(job_ids)
        case Leased(grants):
            for g in grants:
                item.jobs.add(job_id=g.job_id, attempt=g.attempt,
                              lease_expires_at_us=g.lease_expires_at_us, receipt=g.receipt)
        case Settled(outcomes):
            item.errors.extend(result.errors())
            item.refusals.extend(refusal_to_pb(o) for o in outcomes)
        case Reassigned(count):
            item.reassigned = count
        case Checkpointed(written_slot):
            item.written_slot = written_slot
        case Affected(count, deferred):
            item.affected, item.deferred = count, deferred
        case Paused(queue, paused, until_us, was_paused):
            item.queue, item.paused = queue, paused
            item.paused_until_us, item.was_paused = until_us, was_paused
        case Configured(queue, config):
            item.queue = queue
            item.config.CopyFrom(config)
        case ScheduleSet(name, version, existed, changed, next_fire_at_us):
            item.schedule.name, item.schedule.version = name, version
            item.schedule.existed, item.schedule.changed = existed, changed
            item.schedule.next_fire_at_us = next_fire_at_us
        case ScheduleRemoved(name, existed):
            item.schedule.name, item.schedule.existed = name, existed
            item.schedule.changed = existed
        case Ticked(name, job_id, next_fire_at_us, dropped):
            item.schedule.name, item.schedule.job_id = name, job_id
            item.schedule.next_fire_at_us, item.schedule.dropped = next_fire_at_us, dropped
            item.schedule.changed = bool(job_id)
    return item


def results_from_pb(items, kinds: list[str]) -> list[Result | None]:
    """Back to the typed results; ``kinds`` are the commands' oneof names, in order.

    A peer older than the enum fields sent only the strings: they are parsed."""
    out: list[Result | None] = []
    for item, kind in zip(items, kinds):
        if item.error:
            refused = Refused.parse(item.error)
            number = refusal_from_pb(item.refusal, "")
            out.append(refused._replace(reason=number) if number is not None else refused)
        elif kind == "enqueue":
            out.append(Enqueued(tuple(item.job_ids)))
        elif kind == "lease":
            out.append(Leased(tuple(Grant(j.job_id, j.attempt, j.lease_expires_at_us, j.receipt)
                                    for j in item.jobs)))
        elif kind in ("ack", "nack", "extend", "expire"):
            numbers = list(item.refusals) or [0] * len(item.errors)
            out.append(Settled(tuple(refusal_from_pb(n, e)
                                     for n, e in zip(numbers, item.errors, strict=True))))
        elif kind == "reassign":
            out.append(Reassigned(item.reassigned))
        elif kind == "checkpoint":
            out.append(Checkpointed(item.written_slot))
        elif kind in _AFFECTING:
            out.append(Affected(item.affected, item.deferred))
        elif kind in ("pause", "resume"):
            out.append(Paused(item.queue, item.paused, item.paused_until_us, item.was_paused))
        elif kind == "queue_config":
            out.append(Configured(item.queue, item.config))
        elif kind == "create_schedule":
            s = item.schedule
            out.append(ScheduleSet(s.name, s.version, s.existed, s.changed, s.next_fire_at_us))
        elif kind == "delete_schedule":
            out.append(ScheduleRemoved(item.schedule.name, item.schedule.existed))
        elif kind == "schedule_tick":
            s = item.schedule
            out.append(Ticked(s.name, s.job_id, s.next_fire_at_us, s.dropped))
        else:
            out.append(None)
    return out
