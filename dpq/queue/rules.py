"""What every replica requires of a committed command before it applies it.

Commands are checked before they are proposed (``dpq.queue.validate``, with
the node's limits). The checks here are the last line, for a command that got
into the log anyway (a bug, an older version, a hostile proposal): fixed
limits, the same on every replica whatever its flags, so such a command is
refused the same way everywhere and changes nothing. The limits are wider than
any the public API accepts, so nothing valid is refused here.

Pure: no I/O, no logging (the applier logs refusals), no clock.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from dpq.queue import limits, timetable
from dpq.queue.results import Refusal, Refused
from dpq.queue.selector import selects_everything
from dpq.v1 import log_pb2, queue_pb2

# Priorities: 1 is the most urgent. The state machine owns these bounds; dpq/heap.py takes
# them from here, dpq/_fastheap.pyx compiles its own copy (tests/test_heap.py: they agree).
PRIORITY_MIN = 1
PRIORITY_MAX = 5

DAY_MS = 24 * 3600 * 1000

#: A leader stamp after 2200-01-01 is a broken clock (and would push job times
#: out of what the heaps and snapshots hold).
MAX_CLOCK_US = 7_258_118_400 * 1_000_000
MAX_PAYLOAD_BYTES = 64 << 20
#: Queue names, dedup keys and consumer ids.
MAX_NAME_CHARS = 1024
MAX_DELAY_MS = 31 * DAY_MS  # the public limit is 30 days
MAX_LEASE_MS = 7 * DAY_MS
MAX_DEDUP_WINDOW_US = 366 * DAY_MS * 1000
#: A proposal's ``(client_id, seq)`` must fit the sessions table's encoding
#: (a signed 64-bit floor that may move one past the seq).
MAX_CLIENT_ID_BYTES = 1024
MAX_SEQ = 2**62
#: A nack's error text, in bytes of UTF-8 (the public limit is 1,024).
MAX_ERROR_BYTES = 4096
#: Job ids one selector may name (the public limit is 10,000).
MAX_SELECTOR_IDS = 1_000_000
_JOB_STATES = frozenset(queue_pb2.JobState.values())

#: Letters, digits and ``_ . : -`` (the public API's rule, shared with validate).
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")
DEFAULT_QUEUE = "default"


class RefusalRecord(NamedTuple):
    """One refusal of the slot just applied, for the applier's error log."""

    index: int  # the command's position in its batch; -1: the whole slot
    kind: str  # "enqueue", "lease", … or "batch"
    refused: Refused  # also the command's result


def reason(refusal: Refusal, detail: str) -> Refused:
    return Refused(refusal, detail)


def problem(command: log_pb2.Command, kind: str | None, members: frozenset[int], slot: int,
            known_queues: dict[str, str]) -> Refused | None:
    """Why ``command`` (applied in ``slot``) must be refused, or None.

    ``known_queues``: names already held, which need no second look.
    """
    check = _CHECKS.get(kind)  # type: ignore[arg-type]
    if check is None:
        return reason(Refusal.UNKNOWN, f"command kind {kind!r}")
    return check(getattr(command, kind), members, slot, known_queues)


def _not_members(ids, members: frozenset[int], what: str) -> Refused | None:
    strangers = set(ids) - members
    if strangers:
        return reason(Refusal.NOT_MEMBER,
                      f"{what} {sorted(strangers)[:5]} not among the members {sorted(members)}")
    return None


def _over(field: str, value: int, limit: int) -> Refused:
    return reason(Refusal.INVALID, f"{field} {value} over the limit of {limit}")


def _enqueue(cmd: log_pb2.EnqueueCommand, members, slot, known) -> Refused | None:
    jobs, owners = cmd.jobs, cmd.owners
    if len(owners) != len(jobs):
        return reason(Refusal.INVALID, f"{len(jobs)} jobs but {len(owners)} owners")
    if cmd.dedup_window_us > MAX_DEDUP_WINDOW_US:
        return _over("dedup_window_us", cmd.dedup_window_us, MAX_DEDUP_WINDOW_US)
    strangers = _not_members(owners, members, "owners")
    if strangers:
        return strangers
    for i, job in enumerate(jobs):
        if not PRIORITY_MIN <= job.priority <= PRIORITY_MAX:
            return reason(Refusal.INVALID, f"jobs[{i}].priority {job.priority} outside "
                                           f"{PRIORITY_MIN}..{PRIORITY_MAX}")
        queue = job.queue
        if queue not in known and queue and (
                len(queue) > MAX_NAME_CHARS or not QUEUE_NAME.fullmatch(queue)):
            return reason(Refusal.INVALID, f"jobs[{i}].queue {queue[:64]!r} is not a queue name")
        if len(job.payload) > MAX_PAYLOAD_BYTES:
            return _over(f"jobs[{i}].payload bytes", len(job.payload), MAX_PAYLOAD_BYTES)
        if job.delay_ms > MAX_DELAY_MS:
            return _over(f"jobs[{i}].delay_ms", job.delay_ms, MAX_DELAY_MS)
        if len(job.dedup_key) > MAX_NAME_CHARS:
            return _over(f"jobs[{i}].dedup_key characters", len(job.dedup_key), MAX_NAME_CHARS)
        if len(job.fairness_key) > MAX_NAME_CHARS:
            return _over(f"jobs[{i}].fairness_key characters", len(job.fairness_key),
                         MAX_NAME_CHARS)
    return None


def _lease_ms(lease_ms: int) -> Refused | None:
    if not 1 <= lease_ms <= MAX_LEASE_MS:
        return reason(Refusal.INVALID, f"lease_ms {lease_ms} outside 1..{MAX_LEASE_MS}")
    return None


def _lease(cmd: log_pb2.LeaseCommand, members, slot, known) -> Refused | None:
    if cmd.node not in members:
        return reason(Refusal.NOT_MEMBER,
                      f"node {cmd.node} not among the members {sorted(members)}")
    if len(cmd.receipts) != len(cmd.job_ids):
        return reason(Refusal.INVALID,
                      f"{len(cmd.job_ids)} job ids but {len(cmd.receipts)} receipts")
    if 0 in cmd.receipts:
        return reason(Refusal.INVALID, "a receipt of 0")
    if len(cmd.consumer_id) > MAX_NAME_CHARS:
        return _over("consumer_id characters", len(cmd.consumer_id), MAX_NAME_CHARS)
    return _lease_ms(cmd.lease_ms)


def _refs_only(cmd, members, slot, known) -> Refused | None:
    return None  # each reference is checked against the job it names


def _nack(cmd: log_pb2.NackCommand, members, slot, known) -> Refused | None:
    if cmd.delay_ms > MAX_DELAY_MS:
        return _over("delay_ms", cmd.delay_ms, MAX_DELAY_MS)
    if len(cmd.error) > MAX_ERROR_BYTES:  # characters ≤ bytes: a cheap first look
        size = len(cmd.error.encode())
        if size > MAX_ERROR_BYTES:
            return _over("error bytes", size, MAX_ERROR_BYTES)
    return None


def _queue_name(field: str, queue: str, known) -> Refused | None:
    if queue and queue not in known and (
            len(queue) > MAX_NAME_CHARS or not QUEUE_NAME.fullmatch(queue)):
        return reason(Refusal.INVALID, f"{field} {queue[:64]!r} is not a queue name")
    return None


def _selector(sel: queue_pb2.JobSelector, known) -> Refused | None:
    if selects_everything(sel) and not sel.all:
        return reason(Refusal.INVALID, "an empty selector without all")
    if len(sel.job_ids) > MAX_SELECTOR_IDS:
        return _over("selector.job_ids", len(sel.job_ids), MAX_SELECTOR_IDS)
    if sel.state not in _JOB_STATES:
        return reason(Refusal.INVALID, f"selector.state {sel.state} is not a JobState")
    if not 0 <= sel.priority <= PRIORITY_MAX:
        return reason(Refusal.INVALID,
                      f"selector.priority {sel.priority} outside 0..{PRIORITY_MAX}")
    if len(sel.dedup_key_prefix) > MAX_NAME_CHARS:
        return _over("selector.dedup_key_prefix characters", len(sel.dedup_key_prefix),
                     MAX_NAME_CHARS)
    return _queue_name("selector.queue", sel.queue, known)


def _selected(cmd, members, slot, known) -> Refused | None:
    return _selector(cmd.selector, known)


def _set_priority(cmd: log_pb2.SetPriorityCommand, members, slot, known) -> Refused | None:
    if not PRIORITY_MIN <= cmd.priority <= PRIORITY_MAX:
        return reason(Refusal.INVALID,
                      f"priority {cmd.priority} outside {PRIORITY_MIN}..{PRIORITY_MAX}")
    return _selector(cmd.selector, known)


def _pause(cmd: log_pb2.PauseCommand, members, slot, known) -> Refused | None:
    if cmd.duration_ms > MAX_DELAY_MS:
        return _over("duration_ms", cmd.duration_ms, MAX_DELAY_MS)
    return _queue_name("queue", cmd.queue, known)


def _queue_only(cmd, members, slot, known) -> Refused | None:
    return _queue_name("queue", cmd.queue, known)


def _queue_config(cmd: log_pb2.QueueConfigCommand, members, slot, known) -> Refused | None:
    change = cmd.change
    bad = limits.problem(change)
    if bad is not None:
        field, value, limit = bad
        return reason(Refusal.INVALID, f"{field} {value} outside {limit}")
    return _queue_name("queue", change.queue, known)


def _extend(cmd: log_pb2.ExtendCommand, members, slot, known) -> Refused | None:
    return _lease_ms(cmd.lease_ms)


def _reassign(cmd: log_pb2.ReassignCommand, members, slot, known) -> Refused | None:
    if len(cmd.owners) != len(cmd.job_ids):
        return reason(Refusal.INVALID, f"{len(cmd.job_ids)} job ids but {len(cmd.owners)} owners")
    return _not_members(cmd.owners, members, "owners")


def _checkpoint(cmd: log_pb2.CheckpointCommand, members, slot, known) -> Refused | None:
    # A checkpoint can only vouch for slots before its own: a later one would
    # make every replica forget changes PostgreSQL does not have yet.
    if cmd.written_slot >= slot:
        return reason(Refusal.INVALID,
                      f"written_slot {cmd.written_slot} is not below its own slot {slot}")
    return None


# ------------------------------------------------------------------ periodic jobs
# The state's own limits (dpq.queue.schedules) are the public ones: a schedule is
# small and rare, and its cron expression must parse on every replica alike.

#: Schedule names, in bytes of UTF-8 (dpq.queue.schedules.MAX_NAME_BYTES).
MAX_SCHEDULE_NAME_BYTES = 200


def _schedule_name(field: str, name: str) -> Refused | None:
    size = len(name.encode())
    if not 1 <= size <= MAX_SCHEDULE_NAME_BYTES:
        return reason(Refusal.INVALID,
                      f"{field} of {size} bytes outside 1..{MAX_SCHEDULE_NAME_BYTES}")
    return None


def _create_schedule(cmd: log_pb2.CreateScheduleCommand, members, slot,
                     known) -> Refused | None:
    s = cmd.schedule
    why = _schedule_name("schedule.name", s.name) or _queue_name("schedule.queue", s.queue,
                                                                 known)
    if why:
        return why
    if not 0 <= s.priority <= PRIORITY_MAX:
        return reason(Refusal.INVALID, f"schedule.priority {s.priority} outside 0..{PRIORITY_MAX}")
    if len(s.payload) > MAX_PAYLOAD_BYTES:
        return _over("schedule.payload bytes", len(s.payload), MAX_PAYLOAD_BYTES)
    if len(s.fairness_key) > MAX_NAME_CHARS:
        return _over("schedule.fairness_key characters", len(s.fairness_key), MAX_NAME_CHARS)
    if bool(s.cron.strip()) == bool(s.every_ms):
        return reason(Refusal.INVALID, "schedule: give exactly one of cron and every_ms")
    if s.cron:
        if len(s.cron) > MAX_NAME_CHARS:
            return _over("schedule.cron characters", len(s.cron), MAX_NAME_CHARS)
        problem = timetable.cron_problem(s.cron)
        if problem:
            return reason(Refusal.INVALID, f"schedule.cron {s.cron[:64]!r}: {problem}")
    elif not timetable.MIN_EVERY_MS <= s.every_ms <= timetable.MAX_EVERY_MS:
        return reason(Refusal.INVALID, f"schedule.every_ms {s.every_ms} outside "
                                       f"{timetable.MIN_EVERY_MS}..{timetable.MAX_EVERY_MS}")
    if s.jitter_ms > timetable.MAX_EVERY_MS:
        return _over("schedule.jitter_ms", s.jitter_ms, timetable.MAX_EVERY_MS)
    if not 0 <= s.start_at <= MAX_CLOCK_US:
        return reason(Refusal.INVALID, f"schedule.start_at {s.start_at} outside "
                                       f"0..{MAX_CLOCK_US} us")
    return None


def _delete_schedule(cmd: log_pb2.DeleteScheduleCommand, members, slot,
                     known) -> Refused | None:
    return _schedule_name("name", cmd.name)


def _schedule_tick(cmd: log_pb2.ScheduleTickCommand, members, slot, known) -> Refused | None:
    if cmd.owner not in members:
        return reason(Refusal.NOT_MEMBER,
                      f"owner {cmd.owner} not among the members {sorted(members)}")
    if not 0 < cmd.fire_at_us <= MAX_CLOCK_US:
        return reason(Refusal.INVALID, f"fire_at_us {cmd.fire_at_us} outside 1..{MAX_CLOCK_US}")
    return _schedule_name("name", cmd.name)


_CHECKS = {
    "enqueue": _enqueue,
    "lease": _lease,
    "ack": _refs_only,
    "nack": _nack,
    "extend": _extend,
    "expire": _refs_only,
    "reassign": _reassign,
    "checkpoint": _checkpoint,
    "cancel": _selected,
    "retry": _selected,
    "set_priority": _set_priority,
    "pause": _pause,
    "resume": _queue_only,
    "purge": _queue_only,
    "queue_config": _queue_config,
    "create_schedule": _create_schedule,
    "delete_schedule": _delete_schedule,
    "schedule_tick": _schedule_tick,
}
