"""Checks on client input, done at the edge before anything is proposed.

Each check raises :class:`InvalidArgument` with a message that names the
field, the value and the limit, so a person can fix the call. A batch is
checked whole before anything of it is used: one bad job refuses the batch.
The servicers turn the exception into gRPC ``INVALID_ARGUMENT``.

:func:`proposal` checks a whole ``CommandBatch`` that a gateway or a node
sends the leader through ``Replication/Propose``, with the same limits, before
it is proposed: only valid commands reach the log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dpq.queue import limits as queue_limits
from dpq.queue import rules, timetable
from dpq.queue.rules import PRIORITY_MAX, PRIORITY_MIN
from dpq.queue.selector import selects_everything
from dpq.v1 import log_pb2, queue_pb2

QUEUE_NAME_CHARS = "letters, digits and _ . : -"
_QUEUE_NAME = rules.QUEUE_NAME
DEFAULT_QUEUE = rules.DEFAULT_QUEUE

#: The one home of the defaults a node and a gateway share (``--max-payload-bytes``,
#: ``--dedup-window-ms``); the client library leaves both to the server.
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20  # 1 MiB
DEFAULT_DEDUP_WINDOW_MS = 3_600_000  # 1 h


class InvalidArgument(ValueError):
    """Client input that breaks a documented limit."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits a node enforces (node flags set the non-default ones)."""

    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_queue_name: int = 128
    max_dedup_key: int = 256
    max_consumer_id: int = 256
    max_batch_jobs: int = 10_000
    max_delay_ms: int = 30 * 24 * 3600 * 1000  # 30 days
    max_dequeue_jobs: int = 1000
    max_wait_ms: int = 60_000
    max_lease_ms: int = 12 * 3600 * 1000  # 12 hours, as SQS's visibility timeout
    max_refs: int = 10_000
    max_consume_credits: int = 10_000  # jobs a Consume stream may be owed at once
    # Proposals between nodes (Replication/Propose):
    max_commands: int = 100_000  # per batch
    max_reassign: int = 1_000_000  # job ids per Reassign
    max_attempts: int = 1_000_000  # a Nack's or Expire's max_attempts
    max_dedup_window_ms: int = rules.MAX_DEDUP_WINDOW_US // 1000
    # Managing jobs:
    max_error_bytes: int = 1024  # a nack's error (UTF-8)
    max_list_jobs: int = 1000  # one ListJobs page
    max_selector_ids: int = 10_000  # job ids in one JobSelector
    max_pause_ms: int = 30 * 24 * 3600 * 1000  # 30 days


DEFAULT_LIMITS = Limits()


def queue_name(name: str, field: str = "queue", limits: Limits = DEFAULT_LIMITS) -> str:
    """The queue a request names; the empty name is the default queue."""
    if not name:
        return DEFAULT_QUEUE
    if len(name) > limits.max_queue_name:
        raise InvalidArgument(
            f"{field}: a name of {len(name)} characters is over the limit of "
            f"{limits.max_queue_name}"
        )
    if not _QUEUE_NAME.fullmatch(name):
        raise InvalidArgument(f"{field}: {name!r} has characters outside {QUEUE_NAME_CHARS}")
    return name


def _at_most(field: str, value: int, limit: int, unit: str = "") -> None:
    if value > limit:
        raise InvalidArgument(f"{field}: {value}{unit} is over the limit of {limit}{unit}")


def new_jobs(jobs: Sequence, limits: Limits = DEFAULT_LIMITS, field: str = "jobs") -> None:
    """Check an Enqueue batch (``dpq.v1.NewJob`` messages)."""
    if not jobs:
        raise InvalidArgument(f"{field}: the batch is empty; send at least one job")
    _at_most(field, len(jobs), limits.max_batch_jobs, " jobs")
    max_payload, max_delay = limits.max_payload_bytes, limits.max_delay_ms
    max_key = limits.max_dedup_key
    names: set[str] = set()  # checked already (a batch mostly names one queue)
    for i, job in enumerate(jobs):
        # the message is built only for a job that breaks a limit (this runs per job)
        if not PRIORITY_MIN <= job.priority <= PRIORITY_MAX:
            raise InvalidArgument(
                f"{field}[{i}].priority: {job.priority} is outside {PRIORITY_MIN}..{PRIORITY_MAX} "
                f"(1 is the most urgent)"
            )
        name = job.queue
        if name not in names:
            queue_name(name, f"{field}[{i}].queue", limits)
            names.add(name)
        if len(job.payload) > max_payload:
            _at_most(f"{field}[{i}].payload", len(job.payload), max_payload, " bytes")
        if job.delay_ms > max_delay:
            _at_most(f"{field}[{i}].delay_ms", job.delay_ms, max_delay, " ms")
        if len(job.dedup_key) > max_key:
            _at_most(f"{field}[{i}].dedup_key", len(job.dedup_key), max_key, " characters")
        if len(job.fairness_key) > max_key:
            _at_most(f"{field}[{i}].fairness_key", len(job.fairness_key), max_key,
                     " characters")


def dequeue(request, limits: Limits = DEFAULT_LIMITS) -> str:
    """Check a Dequeue request; return its queue name."""
    queue = queue_name(request.queue, "queue", limits)
    if request.max_jobs == 0:
        raise InvalidArgument(
            f"max_jobs: 0 is below the minimum of 1 (at most {limits.max_dequeue_jobs})")
    _at_most("max_jobs", request.max_jobs, limits.max_dequeue_jobs)
    if request.lease_ms == 0:
        raise InvalidArgument(
            f"lease_ms: 0 is below the minimum of 1 ms (at most {limits.max_lease_ms} ms)")
    _at_most("lease_ms", request.lease_ms, limits.max_lease_ms, " ms")
    _at_most("wait_ms", request.wait_ms, limits.max_wait_ms, " ms")
    _at_most("consumer_id", len(request.consumer_id), limits.max_consumer_id, " characters")
    return queue


def consume_open(opening, limits: Limits = DEFAULT_LIMITS) -> str:
    """Check the opening of a Consume stream (``ConsumeOpen``); return its queue name."""
    queue = queue_name(opening.queue, "open.queue", limits)
    lease(opening.lease_ms, limits, "open.lease_ms")
    _at_most("open.consumer_id", len(opening.consumer_id), limits.max_consumer_id,
             " characters")
    _at_most("open.wait_ms", opening.wait_ms, limits.max_wait_ms, " ms")
    return queue


def credits(outstanding: int, more: int, limits: Limits = DEFAULT_LIMITS) -> None:
    """Check that ``more`` credits on top of ``outstanding`` stay within the limit."""
    if outstanding + more > limits.max_consume_credits:
        raise InvalidArgument(
            f"credits: {more} more would make {outstanding + more} jobs outstanding on this "
            f"stream, over the limit of {limits.max_consume_credits}")


def refs(jobs: Sequence, limits: Limits = DEFAULT_LIMITS, field: str = "jobs") -> None:
    """Check the lease tokens of an Ack, Nack or ExtendLease."""
    if not jobs:
        raise InvalidArgument(f"{field}: no job references; send at least one")
    _at_most(field, len(jobs), limits.max_refs, " references")
    for i, ref in enumerate(jobs):
        if ref.job_id == 0:
            raise InvalidArgument(f"{field}[{i}].job_id: 0 is not a job id (ids start at 1)")
        if ref.attempt == 0:
            raise InvalidArgument(
                f"{field}[{i}].attempt: 0 is not a lease; "
                "quote the attempt the job was delivered with"
            )


def nack_delay(delay_ms: int, limits: Limits = DEFAULT_LIMITS, field: str = "delay_ms") -> None:
    _at_most(field, delay_ms, limits.max_delay_ms, " ms")


def nack_error(error: str, limits: Limits = DEFAULT_LIMITS, field: str = "error") -> None:
    if len(error) * 4 > limits.max_error_bytes:  # else it fits whatever its characters
        _at_most(field, len(error.encode()), limits.max_error_bytes, " bytes of UTF-8")


# ------------------------------------------------------------------ managing jobs

#: The JobState names a request may use, for messages.
_STATE_NAMES = ", ".join(queue_pb2.JobState.keys())


def job_id(value: int, field: str = "job_id") -> int:
    if value == 0:
        raise InvalidArgument(f"{field}: 0 is not a job id (ids start at 1)")
    return value


def job_state(value: int, field: str = "state") -> int:
    if value not in queue_pb2.JobState.values():
        raise InvalidArgument(f"{field}: {value} is not a JobState (one of {_STATE_NAMES})")
    return value


def priority_filter(value: int, field: str = "priority") -> int:
    """A priority to match: 0 (any) or 1..5."""
    if value and not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise InvalidArgument(
            f"{field}: {value} is outside {PRIORITY_MIN}..{PRIORITY_MAX} (0 means any)")
    return value


def priority(value: int, field: str = "priority") -> int:
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise InvalidArgument(
            f"{field}: {value} is outside {PRIORITY_MIN}..{PRIORITY_MAX} (1 is the most urgent)")
    return value


def selector(sel: queue_pb2.JobSelector, limits: Limits = DEFAULT_LIMITS,
             field: str = "selector") -> None:
    """Check a ``JobSelector``: an empty one must say ``all``."""
    if selects_everything(sel) and not sel.all:
        raise InvalidArgument(
            f"{field}: no field is set, which would select every job of every queue; "
            f"set {field}.all = true to mean that")
    _at_most(f"{field}.job_ids", len(sel.job_ids), limits.max_selector_ids, " job ids")
    for i, value in enumerate(sel.job_ids):
        job_id(value, f"{field}.job_ids[{i}]")
    if sel.queue:
        queue_name(sel.queue, f"{field}.queue", limits)
    job_state(sel.state, f"{field}.state")
    priority_filter(sel.priority, f"{field}.priority")
    _at_most(f"{field}.dedup_key_prefix", len(sel.dedup_key_prefix), limits.max_dedup_key,
             " characters")


def list_jobs(request: queue_pb2.ListJobsRequest, limits: Limits = DEFAULT_LIMITS) -> int:
    """Check a ListJobs request; return its page size."""
    if request.queue:
        queue_name(request.queue, "queue", limits)
    job_state(request.state)
    priority_filter(request.priority)
    _at_most("limit", request.limit, limits.max_list_jobs, " jobs")
    return request.limit or min(100, limits.max_list_jobs)


def queue_config(change: queue_pb2.SetQueueConfigRequest, limits: Limits = DEFAULT_LIMITS,
                 field: str = "") -> str:
    """Check a SetQueueConfig change; return its queue name."""
    queue = queue_name(change.queue, f"{field}queue", limits)
    bad = queue_limits.problem(change)
    if bad is not None:
        name, value, limit = bad
        raise InvalidArgument(f"{field}{name}: {value} is outside {limit}")
    for i, entry in enumerate(change.fairness_weights):
        _at_most(f"{field}fairness_weights[{i}].key", len(entry.key), limits.max_dedup_key,
                 " characters")
    return queue


def pause_duration(duration_ms: int, limits: Limits = DEFAULT_LIMITS,
                   field: str = "duration_ms") -> None:
    _at_most(field, duration_ms, limits.max_pause_ms, " ms")


def lease(lease_ms: int, limits: Limits = DEFAULT_LIMITS, field: str = "lease_ms") -> None:
    if lease_ms == 0:
        raise InvalidArgument(
            f"{field}: 0 is below the minimum of 1 ms (at most {limits.max_lease_ms} ms)")
    _at_most(field, lease_ms, limits.max_lease_ms, " ms")


# ------------------------------------------------------------------ periodic jobs

#: The most schedules a cluster holds (``dpq.queue.schedules.MAX_SCHEDULES``).
MAX_SCHEDULES = 10_000


def schedule_name(name: str, field: str = "name") -> str:
    size = len(name.encode())
    if size == 0:
        raise InvalidArgument(f"{field}: empty; name the schedule (1..200 bytes)")
    _at_most(field, size, rules.MAX_SCHEDULE_NAME_BYTES, " bytes")
    return name


def schedule(s: queue_pb2.Schedule, limits: Limits = DEFAULT_LIMITS, field: str = "schedule",
             now_us: int | None = None) -> None:
    """Check a ``Schedule`` to create. With ``now_us`` (at the edge) also that it has a
    next tick and that its jitter is within its interval (the shortest gap between its
    next occurrences, for cron). The answer-only fields are ignored."""
    schedule_name(s.name, f"{field}.name")
    queue_name(s.queue, f"{field}.queue", limits)
    if s.priority:
        priority(s.priority, f"{field}.priority")
    _at_most(f"{field}.payload", len(s.payload), limits.max_payload_bytes, " bytes")
    _at_most(f"{field}.fairness_key", len(s.fairness_key), limits.max_dedup_key, " characters")
    cron = s.cron.strip()
    if bool(cron) == bool(s.every_ms):
        raise InvalidArgument(
            f"{field}: give exactly one of cron (5 fields, UTC) and every_ms "
            f"(got cron {s.cron!r} and every_ms {s.every_ms})")
    if cron:
        _at_most(f"{field}.cron", len(cron), limits.max_dedup_key, " characters")
        problem = timetable.cron_problem(cron)
        if problem:
            raise InvalidArgument(f"{field}.cron: {cron!r}: {problem}")
    elif not timetable.MIN_EVERY_MS <= s.every_ms <= timetable.MAX_EVERY_MS:
        raise InvalidArgument(
            f"{field}.every_ms: {s.every_ms} is outside {timetable.MIN_EVERY_MS}.."
            f"{timetable.MAX_EVERY_MS} ms (1 s .. 366 days)")
    if not 0 <= s.start_at <= rules.MAX_CLOCK_US:
        raise InvalidArgument(f"{field}.start_at: {s.start_at} us is outside 0.."
                              f"{rules.MAX_CLOCK_US} us since the epoch (0: now)")
    _at_most(f"{field}.jitter_ms", s.jitter_ms, timetable.MAX_EVERY_MS, " ms")
    if now_us is None:
        return
    start = max(s.start_at, now_us)
    if cron and timetable.first_at_or_after(cron, 0, start) == timetable.NEVER:
        raise InvalidArgument(f"{field}.cron: {cron!r} matches no time after "
                              f"{s.start_at or now_us} us (before the year 2200)")
    gap = timetable.shortest_gap_ms(cron, s.every_ms, start)
    if s.jitter_ms and gap is not None and s.jitter_ms > gap:
        raise InvalidArgument(f"{field}.jitter_ms: {s.jitter_ms} ms is over the schedule's "
                              f"interval of {gap} ms")


# ------------------------------------------------------------------ proposals

def proposal(data: bytes, limits: Limits, members: frozenset[int]) -> log_pb2.CommandBatch:
    """Decode and check a ``CommandBatch`` sent through ``Replication/Propose``
    (:func:`commands` on the decoded batch)."""
    try:
        batch = log_pb2.CommandBatch.FromString(data)
    except Exception:  # noqa: BLE001 - any undecodable body is the same mistake
        raise InvalidArgument(
            f"batch: {len(data)} bytes that do not decode as a dpq.v1.CommandBatch") from None
    commands(batch, limits, members)
    return batch


def commands(batch: log_pb2.CommandBatch, limits: Limits, members: frozenset[int]) -> None:
    """Check every command of a batch another process proposes.

    Every command is checked with the public API's limits, and node ids
    (owners, a lease's node) must be among ``members``. A Checkpoint is never
    taken from outside: only the leader's own writer proposes it, locally.
    Who may propose which kind is not decided here; :func:`kinds` lists them.
    """
    items = batch.commands
    if not items:
        raise InvalidArgument("batch: no commands; send at least one")
    _at_most("batch.commands", len(items), limits.max_commands, " commands")
    for i, command in enumerate(items):
        kind = command.WhichOneof("kind")
        check = _PROPOSAL_CHECKS.get(kind)  # type: ignore[arg-type]
        where = f"commands[{i}].{kind}"
        if check is None:
            what = "no command" if kind is None else f"a {kind} command"
            raise InvalidArgument(f"commands[{i}]: {what} is not accepted from another process")
        check(getattr(command, kind), where, limits, members)


def kinds(batch: log_pb2.CommandBatch) -> list[str]:
    """The kind of each command of a decoded batch ("enqueue", "lease", …), in order."""
    return [command.WhichOneof("kind") for command in batch.commands]


def _members(field: str, ids: Sequence[int], members: frozenset[int]) -> None:
    for i, node in enumerate(ids):
        if node not in members:
            raise InvalidArgument(
                f"{field}[{i}]: node {node} is not a member of the cluster {sorted(members)}")


def _same_count(field: str, values: Sequence, other: str, expected: Sequence) -> None:
    if len(values) != len(expected):
        raise InvalidArgument(
            f"{field}: {len(values)} given for {len(expected)} {other}; give one per item")


def _job_ids(field: str, ids: Sequence[int], limit: int) -> None:
    if not ids:
        raise InvalidArgument(f"{field}: no job ids; give at least one")
    _at_most(field, len(ids), limit, " job ids")
    for i, job_id in enumerate(ids):
        if job_id == 0:
            raise InvalidArgument(f"{field}[{i}]: 0 is not a job id (ids start at 1)")


def _max_attempts(field: str, value: int, limits: Limits) -> None:
    _at_most(field, value, limits.max_attempts, " attempts")


def _check_enqueue(cmd: log_pb2.EnqueueCommand, where: str, limits: Limits,
                   members: frozenset[int]) -> None:
    new_jobs(cmd.jobs, limits, f"{where}.jobs")
    _same_count(f"{where}.owners", cmd.owners, "jobs", cmd.jobs)
    _members(f"{where}.owners", cmd.owners, members)
    _at_most(f"{where}.dedup_window_us", cmd.dedup_window_us, limits.max_dedup_window_ms * 1000,
             " us")


def _check_lease(cmd: log_pb2.LeaseCommand, where: str, limits: Limits,
                 members: frozenset[int]) -> None:
    if cmd.node not in members:
        raise InvalidArgument(
            f"{where}.node: node {cmd.node} is not a member of the cluster {sorted(members)}")
    _job_ids(f"{where}.job_ids", cmd.job_ids, limits.max_dequeue_jobs)
    _same_count(f"{where}.receipts", cmd.receipts, "job ids", cmd.job_ids)
    for i, receipt in enumerate(cmd.receipts):
        if receipt == 0:
            raise InvalidArgument(
                f"{where}.receipts[{i}]: 0 is not a receipt (draw 64 random bits)")
    lease(cmd.lease_ms, limits, f"{where}.lease_ms")
    _at_most(f"{where}.consumer_id", len(cmd.consumer_id), limits.max_consumer_id, " characters")


def _check_ack(cmd: log_pb2.AckCommand, where: str, limits: Limits, members) -> None:
    refs(cmd.jobs, limits, f"{where}.jobs")


def _check_nack(cmd: log_pb2.NackCommand, where: str, limits: Limits, members) -> None:
    refs(cmd.jobs, limits, f"{where}.jobs")
    nack_delay(cmd.delay_ms, limits, f"{where}.delay_ms")
    nack_error(cmd.error, limits, f"{where}.error")
    _max_attempts(f"{where}.max_attempts", cmd.max_attempts, limits)


def _check_extend(cmd: log_pb2.ExtendCommand, where: str, limits: Limits, members) -> None:
    refs(cmd.jobs, limits, f"{where}.jobs")
    lease(cmd.lease_ms, limits, f"{where}.lease_ms")


def _check_expire(cmd: log_pb2.ExpireCommand, where: str, limits: Limits, members) -> None:
    refs(cmd.jobs, limits, f"{where}.jobs")
    _max_attempts(f"{where}.max_attempts", cmd.max_attempts, limits)


def _check_reassign(cmd: log_pb2.ReassignCommand, where: str, limits: Limits,
                    members: frozenset[int]) -> None:
    _job_ids(f"{where}.job_ids", cmd.job_ids, limits.max_reassign)
    _same_count(f"{where}.owners", cmd.owners, "job ids", cmd.job_ids)
    _members(f"{where}.owners", cmd.owners, members)


def _check_selected(cmd, where: str, limits: Limits, members) -> None:
    selector(cmd.selector, limits, f"{where}.selector")


def _check_set_priority(cmd: log_pb2.SetPriorityCommand, where: str, limits: Limits,
                        members) -> None:
    selector(cmd.selector, limits, f"{where}.selector")
    priority(cmd.priority, f"{where}.priority")


def _check_pause(cmd: log_pb2.PauseCommand, where: str, limits: Limits, members) -> None:
    queue_name(cmd.queue, f"{where}.queue", limits)
    pause_duration(cmd.duration_ms, limits, f"{where}.duration_ms")


def _check_queue(cmd, where: str, limits: Limits, members) -> None:
    queue_name(cmd.queue, f"{where}.queue", limits)


def _check_queue_config(cmd: log_pb2.QueueConfigCommand, where: str, limits: Limits,
                        members) -> None:
    queue_config(cmd.change, limits, f"{where}.change.")


def _check_create_schedule(cmd: log_pb2.CreateScheduleCommand, where: str, limits: Limits,
                           members) -> None:
    schedule(cmd.schedule, limits, f"{where}.schedule")


def _check_delete_schedule(cmd: log_pb2.DeleteScheduleCommand, where: str, limits: Limits,
                           members) -> None:
    schedule_name(cmd.name, f"{where}.name")


def _check_schedule_tick(cmd: log_pb2.ScheduleTickCommand, where: str, limits: Limits,
                         members: frozenset[int]) -> None:
    # a tick a leader proposed just before it lost its leadership reaches the next
    # leader this way; the state machine drops it unless it is the schedule's next tick
    schedule_name(cmd.name, f"{where}.name")
    _members(f"{where}.owner", [cmd.owner], members)
    if cmd.fire_at_us <= 0:
        raise InvalidArgument(f"{where}.fire_at_us: {cmd.fire_at_us} is not a time")


_PROPOSAL_CHECKS = {
    "enqueue": _check_enqueue,
    "lease": _check_lease,
    "ack": _check_ack,
    "nack": _check_nack,
    "extend": _check_extend,
    "expire": _check_expire,
    "reassign": _check_reassign,
    "cancel": _check_selected,
    "retry": _check_selected,
    "set_priority": _check_set_priority,
    "pause": _check_pause,
    "resume": _check_queue,
    "purge": _check_queue,
    "queue_config": _check_queue_config,
    "create_schedule": _check_create_schedule,
    "delete_schedule": _check_delete_schedule,
    "schedule_tick": _check_schedule_tick,
    # no "checkpoint": only the leader's writer proposes one, on the leader
}
