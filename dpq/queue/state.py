"""The replicated queue state machine.

Every replica applies the same committed log in the same order and so holds
the same jobs. ``apply`` is deterministic: no clock, no randomness, no I/O.
The only time it knows is the leader's stamp on each slot (see
``dpq.queue.commands``), kept monotonic here so a leader with a slower clock
cannot move time backwards.

Job life cycle (DESIGN.md, "The replicated log and the state machine")::

    Enqueue ──▶ READY ──Lease──▶ LEASED ──Ack──▶ (gone)
                  ▲                │
                  └─Nack / Expire──┘──(max attempts)──▶ DEAD
                  ▲                                        │
                  └───────────────Retry────────────────────┤
                                                 Cancel ──▶ CANCELLED ──(evicted, Purge)──▶ (gone)

Operators act on jobs with bulk commands whose selector (``dpq.queue.selector``)
every replica resolves against the same state: Cancel (READY, delayed and DEAD
jobs become CANCELLED at once; a LEASED one when its lease ends without an
ack), Retry (DEAD and CANCELLED jobs become READY with a fresh attempt budget),
SetPriority, and per queue Pause / Resume (a paused queue leases nothing) and
Purge (everything not leased is removed). The newest ``MAX_CANCELLED_KEPT``
cancelled jobs are kept for Retry; older ones are removed in job id order.

A READY job whose ``ready_at_us`` is in the future is *delayed*. ``attempt``
counts deliveries: a lease sets ``attempt += 1`` and stores the ``receipt`` its
proposer drew at random; ``(job_id, attempt, receipt)`` is the lease token that
Ack, Nack, Extend and Expire must quote, so nobody who did not get the lease
can settle it by guessing the sequential id and the attempt.

Nothing committed can stop a replica: ``apply`` never raises for any proposal
data. A slot whose stamp or batch does not decode, and a command that breaks
the fixed rules of ``dpq.queue.rules`` (checked before anything is changed),
change nothing and answer with a :class:`~dpq.queue.results.Refused` (the
reason, an enum, and a detail); as a last resort a command whose application
raises is turned into such a refusal too. Every replica does the
same. The refusals of the last slot are in :attr:`QueueState.refusals`, for
the applier's error log.

Memory: ``held_bytes`` is what the jobs really cost in this process (the
per-job structures, payloads, remembered dedup keys and per-queue structures,
measured: see ``JOB_OVERHEAD``), for the memory budget. Queue names are
interned: one string per queue, not per job.

Two kinds of derived, non-replicated consumers watch the state:

* an :class:`Observer` (the node's view of the jobs it owns) is told of every
  job whose state or owner changed, synchronously inside ``apply``;
* the leader's PostgreSQL writer reads :meth:`QueueState.unwritten` — the jobs
  touched since the last checkpoint — and records its progress with a
  Checkpoint command, so a new leader knows exactly what is left to write.

And two derived views for operators, kept up inside ``apply`` at the cost of a
few integer operations per job: :attr:`QueueState.ages` (the oldest ready time
per queue and priority, ``dpq.queue.ages``) and :attr:`QueueState.totals` (what
went through each queue since this process started, ``dpq.queue.totals``).
"""

from __future__ import annotations

import heapq
import math
import sys
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from typing import Protocol

from dpq.paxos.sessions import Sessions
from dpq.paxos.types import Proposal, is_config
from dpq.queue import rules
from dpq.queue.ages import ReadyAges
from dpq.queue.commands import unstamp
from dpq.queue.jobs import (
    CONFIG_OVERHEAD,
    DEDUP_OVERHEAD,
    JOB_OVERHEAD,
    QUEUE_OVERHEAD,
    Job,
    JobState,
)
from dpq.queue.limits import MAX_FAIRNESS_KEYS, QueueSettings
from dpq.queue.operators import OPERATOR_KINDS, UNSERVED, OperatorCommands
from dpq.queue.results import (
    Checkpointed,
    Configured,
    Enqueued,
    Grant,
    Leased,
    Reassigned,
    Refusal,
    Refused,
    Result,
    Settled,
)
from dpq.queue.rules import DEFAULT_QUEUE, PRIORITY_MAX, RefusalRecord
from dpq.queue.schedules import ScheduleCommands, ScheduleTable
from dpq.queue.totals import Totals
from dpq.v1 import log_pb2

LEASE_LOST = Refusal.LEASE_LOST
NOT_FOUND = Refusal.NOT_FOUND
NOT_LEASED = Refusal.NOT_LEASED
#: A job reference settled (acked, nacked, extended, expired): no refusal.
OK = None

#: How many results of recent proposals a client can get back after a retry,
#: and for how many clients (least recently applied ones are forgotten first).
RESULTS_PER_CLIENT = 1024
RESULT_CLIENTS = 4096

#: Queues with settings at once (each costs a little memory on every replica).
MAX_CONFIGURED_QUEUES = 10_000

#: How far back a queue's drain rate looks (leader time, µs): the decay's time constant.
DRAIN_WINDOW_US = 60_000_000


class Observer(Protocol):
    """Told of every job whose state, owner, readiness or lease changed."""

    def job_changed(self, job: Job, previous_owner: int, previous_state: JobState) -> None: ...

    def queue_changed(self, queue: str) -> None:
        """The queue was paused or resumed (a resumed queue's consumers should look again)."""


class _Silent:
    def job_changed(self, job: Job, previous_owner: int, previous_state: JobState) -> None:
        pass

    def queue_changed(self, queue: str) -> None:
        pass


class DrainRate:
    """Jobs leased per second from one queue lately, by the leader's clock: an
    exponentially decaying count (derived on every replica, not replicated)."""

    __slots__ = ("_count", "_last_us")

    def __init__(self) -> None:
        self._count = 0.0
        self._last_us = 0

    def add(self, n: int, now_us: int) -> None:
        if self._last_us:
            self._count *= math.exp(-max(0, now_us - self._last_us) / DRAIN_WINDOW_US)
        self._count += n
        self._last_us = max(self._last_us, now_us)

    def per_second(self, now_us: int) -> float:
        if not self._last_us:
            return 0.0
        decay = math.exp(-max(0, now_us - self._last_us) / DRAIN_WINDOW_US)
        return self._count * decay / (DRAIN_WINDOW_US / 1e6)


class QueueCounts:
    """Per-queue counters kept in step with the jobs, so Stats is O(queues)."""

    __slots__ = ("cancelled", "dead", "delayed_by_priority", "delayed_heap", "leased",
                 "ready_by_owner", "ready_by_priority")

    def __init__(self) -> None:
        self.ready_by_priority = [0] * PRIORITY_MAX  # READY jobs, delayed ones included
        self.ready_by_owner: dict[int, int] = {}  # READY jobs (delayed included) per owner
        self.delayed_by_priority = [0] * PRIORITY_MAX
        self.leased = 0
        self.dead = 0
        self.cancelled = 0
        # (ready_at_us, priority) of READY jobs that were delayed when they
        # became ready. A delayed job cannot leave READY before it is due (a
        # lease needs it due), so an entry is only ever removed by time.
        self.delayed_heap: list[tuple[int, int]] = []

    def delay(self, ready_at_us: int, priority: int) -> None:
        heapq.heappush(self.delayed_heap, (ready_at_us, priority))
        self.delayed_by_priority[priority - 1] += 1

    def fall_due(self, now_us: int) -> None:
        """Forget the delays that ended by ``now_us`` (time only moves forward)."""
        heap = self.delayed_heap
        while heap and heap[0][0] <= now_us:
            _, priority = heapq.heappop(heap)
            self.delayed_by_priority[priority - 1] -= 1

    @property
    def empty(self) -> bool:
        return not (any(self.ready_by_priority) or self.leased or self.dead or self.cancelled)


def _decrement(counts: dict[int, int], key: int) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


class QueueState(OperatorCommands, ScheduleCommands):
    """The jobs of every queue, and everything needed to apply commands to them.

    ``members``: the node ids of the cluster (the same on every replica). Jobs
    can be owned, and leased, only by members.
    """

    def __init__(self, observer: Observer | None = None, *, members: frozenset[int]) -> None:
        self.members = frozenset(members)
        self.jobs: dict[int, Job] = {}
        self.next_job_id = 1
        self.clock_us = 0
        self.applied_slot = 0
        self.written_slot = 0
        self.payload_bytes = 0  # held by all jobs
        self.held_bytes = 0  # what the jobs cost in memory, for the memory budget
        self.sessions = Sessions()
        self.observer: Observer = observer or _Silent()
        self.counts: dict[str, QueueCounts] = {}
        # name -> the one str every job of that queue shares (in step with counts)
        self._queue_names: dict[str, str] = {}
        # (queue, dedup_key) -> (job_id, expires_at_us), pruned in expiry order
        self.dedup: dict[tuple[str, str], tuple[int, int]] = {}
        self._dedup_expiry: list[tuple[int, str, str]] = []
        # job_id -> last slot that touched it, for slots after written_slot
        self._touched: dict[int, int] = {}
        self._touched_by_slot: deque[tuple[int, list[int]]] = deque()
        self._slot_touches: list[int] = []
        # (client_id, seq) -> results, so a retried proposal gets its answer back
        self._results: OrderedDict[str, OrderedDict[int, list[Result]]] = OrderedDict()
        #: The commands of the last applied slot that were refused.
        self.refusals: list[RefusalRecord] = []
        #: The operators' commands of the last applied slot and their results, for
        #: the applier's audit log: ``(kind, command body, result)``.
        self.operations: list[tuple[str, object, Result]] = []
        # While a snapshot is being written: job_id -> the job as it was when the
        # snapshot began, for every job changed or removed since (copy-on-write).
        self._frozen: dict[int, Job] | None = None
        self._frozen_below = 0  # jobs from this id on were born after the snapshot began
        #: queue -> until (leader µs; 0: until resumed). Replicated (in snapshots).
        self.paused: dict[str, int] = {}
        #: queue -> its settings and token bucket (``dpq.queue.limits``). Replicated.
        self.configs: dict[str, QueueSettings] = {}
        self.config_slot = 0  # the last slot whose QueueConfig changed them (for the writer)
        #: Periodic jobs (``dpq.queue.schedules``). Replicated (in snapshots).
        self.schedules = ScheduleTable()
        # ids of CANCELLED jobs, smallest first: evicted past MAX_CANCELLED_KEPT
        # (stale ids of jobs retried or purged since are skipped)
        self._cancelled_ids: list[int] = []
        self.cancelled_kept = 0
        #: job_id -> (JobState.GONE or CANCELLED, when): what GetJob says of a job
        #: this replica saw end. Derived, bounded, not in snapshots.
        self.finished: OrderedDict[int, tuple[JobState, int]] = OrderedDict()
        #: queue -> jobs leased per second lately (for ExplainJob). Derived.
        self.drain: dict[str, DrainRate] = {}
        #: The oldest ready time per queue and priority (``dpq.queue.ages``). Derived.
        self.ages = ReadyAges(self.jobs)
        #: Counts since this process started (``dpq.queue.totals``). Derived, and kept
        #: across snapshot loads (:meth:`reset`, :meth:`adopt`): they only grow.
        self.totals = Totals()

    def reset(self) -> None:
        """Forget everything (before loading a snapshot); observers, members and totals
        stay."""
        totals = self.totals
        self.__init__(self.observer, members=self.members)
        self.totals = totals

    def adopt(self, loaded: QueueState) -> None:
        """Hold what ``loaded`` holds (a snapshot loaded outside the event loop) instead of
        what this state held; observers, members and totals stay. ``loaded`` must not be
        used again."""
        observer, members, totals = self.observer, self.members, self.totals
        self.__dict__.update(loaded.__dict__)
        self.observer, self.members, self.totals = observer, members, totals
        loaded.__dict__.clear()

    # ---------------------------------------------------------- copy-on-write

    def freeze(self) -> dict[int, Job]:
        """Keep, from now on, the original of every job a command changes or removes.

        A snapshot written a piece at a time, between commands, reads a job from
        the returned dict when it is there and from ``jobs`` otherwise, so it sees
        every job as it was at this moment. Jobs enqueued later have ids from
        ``next_job_id`` on and are not in the snapshot. :meth:`thaw` ends it.
        """
        if self._frozen is not None:
            raise RuntimeError("the state is already frozen for a snapshot")
        self._frozen, self._frozen_below = {}, self.next_job_id
        return self._frozen

    @property
    def frozen(self) -> bool:
        """Whether a snapshot is being written (see :meth:`freeze`)."""
        return self._frozen is not None

    def thaw(self) -> None:
        self._frozen, self._frozen_below = None, 0

    def _keep(self, job: Job) -> None:
        """Called before ``job`` changes: keep its original for the snapshot being written."""
        frozen = self._frozen
        if frozen is not None and job.job_id < self._frozen_below and job.job_id not in frozen:
            frozen[job.job_id] = job.copy()

    # ---------------------------------------------------------------- applying

    def apply(self, slot: int, proposal: Proposal) -> list[Result] | None:
        """Apply one committed slot; return one result per command, or None.

        Each result has the type of its command (``dpq.queue.results``). None
        means the slot changed nothing: a no-op, or a retry of a proposal
        already applied whose results are no longer remembered. A retry whose
        results are remembered gets them again, unchanged. A refused command's
        result is a :class:`Refused`; a slot refused whole answers ``[Refused]``.
        Never raises for any proposal (only for a slot applied out of order).
        """
        if slot <= self.applied_slot:
            raise ValueError(f"slot {slot} applied twice (last applied {self.applied_slot})")
        self.applied_slot = slot
        self.refusals = []
        if self.operations:
            self.operations = []
        if proposal.is_noop or is_config(proposal):  # a config entry is the core's own
            return None
        client_id, seq = proposal.client_id, proposal.seq
        why = _proposal_problem(client_id, seq)
        if why is not None:
            return self._refuse_slot(why)
        if not self.sessions.should_apply(client_id, seq):
            remembered = self._results.get(client_id)
            return remembered.get(seq) if remembered is not None else None
        try:
            leader_time_us, batch = unstamp(proposal.data)
            commands = batch.commands
        except Exception as exc:  # noqa: BLE001 - whatever the bytes, a deterministic no-op
            results = self._refuse_slot(rules.reason(Refusal.UNPARSABLE, _describe(exc)))
        else:
            if not 0 <= leader_time_us <= rules.MAX_CLOCK_US:
                results = self._refuse_slot(rules.reason(
                    Refusal.UNPARSABLE,
                    f"leader stamp {leader_time_us} outside 0..{rules.MAX_CLOCK_US} us"))
            else:
                self.clock_us = max(self.clock_us, leader_time_us)
                self._prune_dedup()
                if self.paused:
                    self._prune_pauses()
                results = [self._apply_command(slot, i, c) for i, c in enumerate(commands)]
                self._evict_cancelled()
                self._end_slot(slot)
        self._remember(client_id, seq, results)
        return results

    def _refuse_slot(self, why: Refused) -> list[Result]:
        self.refusals.append(RefusalRecord(-1, "batch", why))
        return [why]

    def _apply_command(self, slot: int, index: int, command: log_pb2.Command) -> Result:
        kind = command.WhichOneof("kind")
        try:
            why = rules.problem(command, kind, self.members, slot, self._queue_names)
            if why is None:
                body = getattr(command, kind)
                result = _APPLY[kind](self, body)
                if isinstance(result, Refused):  # refused by the state, not the rules
                    self.refusals.append(RefusalRecord(index, kind, result))
                elif kind in OPERATOR_KINDS:
                    self.operations.append((kind, body, result))
                return result
        except Exception as exc:  # noqa: BLE001 - a bug must not stop every replica
            why = rules.reason(Refusal.FAILED, _describe(exc))
        self.refusals.append(RefusalRecord(index, kind or "none", why))
        return why

    def _enqueue(self, cmd: log_pb2.EnqueueCommand) -> Enqueued:
        now = self.clock_us
        window = cmd.dedup_window_us
        dedup_expires = now + window
        names = self._queue_names
        ids: list[int] = []
        totals_of, counted = self.totals.of, ""
        enqueued: list[int] = []
        for new, owner in zip(cmd.jobs, cmd.owners):
            name = new.queue
            queue = names.get(name) or self._queue(name)
            if queue is not counted:  # a batch is mostly one queue: one lookup
                counted, enqueued = queue, totals_of(queue).enqueued
            dedup_key = new.dedup_key
            if dedup_key:
                key = (queue, dedup_key)
                seen = self.dedup.get(key)
                if seen is not None:
                    ids.append(seen[0])
                    continue
            job_id = self.next_job_id
            self.next_job_id = job_id + 1
            payload = new.payload
            job = Job(job_id, queue, new.priority, payload, now, now + new.delay_ms * 1000, owner,
                      dedup_key=dedup_key)
            if new.fairness_key:  # one str per tenant, not per job
                job.fairness_key = sys.intern(new.fairness_key)
            self.jobs[job_id] = job
            self.payload_bytes += len(payload)
            self.held_bytes += JOB_OVERHEAD + len(payload)
            self._enter_ready(job)
            enqueued[job.priority - 1] += 1
            self._touch(job_id)
            if dedup_key and window:
                self.dedup[key] = (job_id, dedup_expires)
                heapq.heappush(self._dedup_expiry, (dedup_expires, queue, dedup_key))
                self.held_bytes += DEDUP_OVERHEAD + len(dedup_key)
            self.observer.job_changed(job, owner, JobState.GONE)
            ids.append(job_id)
        return Enqueued(tuple(ids))

    def _lease(self, cmd: log_pb2.LeaseCommand) -> Leased:
        """Grant what is still the proposer's to grant; skip the rest.

        A job qualifies if its proposer owns it and it is READY and due at this
        command's leader time. (A lease that ran out is first released by an
        Expire command, which may put the job in DEAD instead.) The proposer
        checks this too before proposing, but by the time the slot is applied a
        Reassign may have come first.
        """
        now = self.clock_us
        expires = now + cmd.lease_ms * 1000
        node, consumer = cmd.node, cmd.consumer_id  # one str for every job of the lease
        paused, configs = self.paused, self.configs
        totals_of, first_wait = self.totals.of, self.totals.first_wait
        counted, delivered = "", []
        granted: list[Grant] = []
        for job_id, receipt in zip(cmd.job_ids, cmd.receipts):
            job = self.jobs.get(job_id)
            if job is None or job.owner != node:
                continue
            if job.state != JobState.READY or job.ready_at_us > now:
                continue
            if paused and job.queue in paused:
                continue  # paused since it was reserved (pauses are pruned when they end)
            if configs:
                limit = configs.get(job.queue)
                if (limit is not None and limit.limited
                        and not limit.take(self.counts[job.queue].leased, now)):
                    continue  # at its in-flight limit, or out of tokens: stays READY
            self._leave_ready(job)
            self._set_leased(job, job.attempt + 1, expires, consumer, receipt)
            if job.queue is not counted:
                counted, delivered = job.queue, totals_of(job.queue).delivered
            delivered[job.priority - 1] += 1
            if job.attempt == 1:
                first_wait[job.priority - 1].observe(now - job.ready_at_us)
            self.observer.job_changed(job, job.owner, JobState.READY)
            # Values, not the job: the result must say what was granted, not what
            # a later command (in this batch, or before a retry reads the
            # remembered result) makes of the job.
            granted.append(Grant(job_id, job.attempt, expires, receipt))
        if granted:
            queue = self.jobs[granted[0].job_id].queue  # a node leases one queue at a time
            drain = self.drain.get(queue)
            if drain is None:
                drain = self.drain[queue] = DrainRate()
            drain.add(len(granted), now)
        return Leased(tuple(granted))

    def _ack(self, cmd: log_pb2.AckCommand) -> Settled:
        results = []
        totals_of, counted = self.totals.of, ""
        acked: list[int] = []
        for ref in cmd.jobs:
            job, error = self._leased_job(ref)
            if job is not None:
                self._set_unleased(job)
                if job.queue is not counted:  # an ack batch is mostly one queue: one lookup
                    counted, acked = job.queue, totals_of(job.queue).acked
                acked[job.priority - 1] += 1
                self._drop(job, JobState.LEASED, JobState.GONE)
            results.append(error)
        return Settled(tuple(results))

    def _nack(self, cmd: log_pb2.NackCommand) -> Settled:
        return self._release(cmd.jobs, cmd.max_attempts, cmd.delay_ms * 1000, must_be_expired=False,
                             undelivered=cmd.undelivered, last_error=cmd.error)

    def _expire(self, cmd: log_pb2.ExpireCommand) -> Settled:
        return self._release(cmd.jobs, cmd.max_attempts, 0, must_be_expired=True,
                             last_error="lease expired")

    def _release(
        self, refs: Iterable[log_pb2.JobRef], max_attempts: int, delay_us: int,
        must_be_expired: bool,
        undelivered: bool = False,
        last_error: str = "",
    ) -> Settled:
        now = self.clock_us
        results = []
        configs = self.configs
        for ref in refs:
            job, error = self._leased_job(ref)
            if job is not None and configs:
                limit = configs.get(job.queue)
                if limit is not None and limit.max_attempts:
                    max_attempts = limit.max_attempts  # the queue's setting wins
            if job is not None and must_be_expired and job.lease_expires_at_us > now:
                job, error = None, LEASE_LOST  # extended meanwhile: still held
            if job is not None:
                self._set_unleased(job)
                totals = self.totals.of(job.queue)
                if undelivered:
                    job.attempt -= 1  # nobody saw this delivery
                else:
                    if must_be_expired:
                        totals.expired += 1
                    else:
                        totals.nacked += 1
                    if last_error:
                        job.last_error = last_error
                if job.cancel_requested:
                    self._become_cancelled(job)
                elif max_attempts and job.attempt >= max_attempts and not undelivered:
                    job.state = JobState.DEAD
                    self.counts[job.queue].dead += 1
                    totals.died += 1
                else:
                    job.ready_at_us = now + delay_us
                    self._enter_ready(job)
                self._touch(job.job_id)
                self.observer.job_changed(job, job.owner, JobState.LEASED)
            results.append(error)
        return Settled(tuple(results))

    def _extend(self, cmd: log_pb2.ExtendCommand) -> Settled:
        expires = self.clock_us + cmd.lease_ms * 1000
        results = []
        for ref in cmd.jobs:
            job, error = self._leased_job(ref)
            if job is not None:
                self._keep(job)
                job.lease_expires_at_us = expires
                self._touch(job.job_id)
                self.observer.job_changed(job, job.owner, JobState.LEASED)
            results.append(error)
        return Settled(tuple(results))

    def _reassign(self, cmd: log_pb2.ReassignCommand) -> Reassigned:
        moved = 0
        for job_id, owner in zip(cmd.job_ids, cmd.owners):
            job = self.jobs.get(job_id)
            if job is None or job.state in UNSERVED or job.owner == owner:
                continue
            self._keep(job)
            previous_owner, job.owner = job.owner, owner
            if job.state == JobState.READY:
                by_owner = self.counts[job.queue].ready_by_owner
                _decrement(by_owner, previous_owner)
                by_owner[owner] = by_owner.get(owner, 0) + 1
            self._touch(job_id)
            self.observer.job_changed(job, previous_owner, job.state)
            moved += 1
        return Reassigned(moved)

    def _queue_config(self, cmd: log_pb2.QueueConfigCommand) -> Configured | Refused:
        change = cmd.change
        queue = change.queue or DEFAULT_QUEUE
        old = self.configs.get(queue)
        if old is None and len(self.configs) >= MAX_CONFIGURED_QUEUES:
            return rules.reason(Refusal.INVALID, f"{MAX_CONFIGURED_QUEUES} queues have settings "
                                                 "already: clear some first")
        new = (old or QueueSettings()).merged(change, self.applied_slot, self.clock_us)
        if len(new.weights) > MAX_FAIRNESS_KEYS:
            return rules.reason(Refusal.INVALID, f"{len(new.weights)} fairness weights over "
                                                 f"the limit of {MAX_FAIRNESS_KEYS}")
        self.config_slot = self.applied_slot
        if old is not None:
            self.held_bytes -= _config_cost(queue, old)
        if new.empty:
            self.configs.pop(queue, None)
        else:
            self.configs[queue] = new
            self.held_bytes += _config_cost(queue, new)
        self.observer.queue_changed(queue)  # new limits or weights: consumers look again
        return Configured(queue, new.to_pb(queue))

    def _checkpoint(self, cmd: log_pb2.CheckpointCommand) -> Checkpointed:
        written_slot = cmd.written_slot
        if written_slot <= self.written_slot:
            return Checkpointed(self.written_slot)
        self.written_slot = written_slot
        touched, by_slot = self._touched, self._touched_by_slot
        while by_slot and by_slot[0][0] <= written_slot:
            _, ids = by_slot.popleft()
            for job_id in ids:
                if touched.get(job_id, written_slot + 1) <= written_slot:
                    del touched[job_id]
        return Checkpointed(written_slot)


    # ------------------------------------------------------------ memory cost

    def cost_of(self, jobs: Iterable, dedup_window_us: int) -> int:
        """What enqueueing ``jobs`` (``NewJob`` messages) would add to ``held_bytes``, at most."""
        total, names = 0, self._queue_names
        new_queues: set[str] = set()
        for job in jobs:
            total += JOB_OVERHEAD + len(job.payload)
            if dedup_window_us and job.dedup_key:
                total += DEDUP_OVERHEAD + len(job.dedup_key)
            if (job.queue or DEFAULT_QUEUE) not in names:
                new_queues.add(job.queue or DEFAULT_QUEUE)
        return total + sum(QUEUE_OVERHEAD + len(q) for q in new_queues)

    # ----------------------------------------------------------------- helpers

    def _leased_job(self, ref: log_pb2.JobRef) -> tuple[Job | None, Refusal | None]:
        """The job behind a lease token, or why the token is no good.

        An ack whose lease ran out is still taken while nobody else leased the
        job: the work is done and nobody else holds it.
        """
        job = self.jobs.get(ref.job_id)
        if job is None:
            return None, NOT_FOUND
        if job.state != JobState.LEASED:
            return None, LEASE_LOST if ref.attempt and ref.attempt <= job.attempt else NOT_LEASED
        if job.attempt != ref.attempt or job.receipt != ref.receipt:
            return None, LEASE_LOST  # a later lease, or someone who never had this one
        return job, OK

    def _queue(self, name: str) -> str:
        """The interned name of a queue, which gets its counters when new."""
        name = name or DEFAULT_QUEUE
        interned = self._queue_names.get(name)
        if interned is None:
            interned = self._queue_names[name] = name
            self.counts[name] = QueueCounts()
            self.held_bytes += QUEUE_OVERHEAD + len(name)
        return interned

    def _forget_queue(self, name: str) -> None:
        """A queue that holds nothing any more costs nothing (until it is used again)."""
        del self.counts[name]
        del self._queue_names[name]
        self.drain.pop(name, None)
        self.ages.forget(name)
        self.held_bytes -= QUEUE_OVERHEAD + len(name)

    def _enter_ready(self, job: Job) -> None:
        job.state = JobState.READY
        counts = self.counts[job.queue]
        by_priority = counts.ready_by_priority
        by_priority[job.priority - 1] += 1
        counts.ready_by_owner[job.owner] = counts.ready_by_owner.get(job.owner, 0) + 1
        if job.ready_at_us > self.clock_us:
            counts.delay(job.ready_at_us, job.priority)
        self.ages.push(job, by_priority[job.priority - 1], self.clock_us)

    def _leave_ready(self, job: Job) -> None:
        counts = self.counts[job.queue]
        counts.fall_due(self.clock_us)  # the job is due, so its delay entry must go first
        by_priority = counts.ready_by_priority
        by_priority[job.priority - 1] -= 1
        _decrement(counts.ready_by_owner, job.owner)
        self.ages.left(job, job.priority, by_priority[job.priority - 1])

    def _set_leased(self, job: Job, attempt: int, expires: int, consumer_id: str,
                    receipt: int) -> None:
        self._keep(job)
        if job.state != JobState.LEASED:
            self.counts[job.queue].leased += 1
        job.state = JobState.LEASED
        job.attempt = attempt
        job.lease_expires_at_us = expires
        job.consumer_id = consumer_id
        job.receipt = receipt
        self._touch(job.job_id)

    def _set_unleased(self, job: Job) -> None:
        self._keep(job)  # first of every change an ack, nack or expiry makes
        self.counts[job.queue].leased -= 1
        job.lease_expires_at_us = 0
        job.consumer_id = ""
        job.receipt = 0

    def _drop(self, job: Job, previous_state: JobState, ended_as: JobState) -> None:
        """Take ``job`` out of the state for good, once it left its state's counters:
        acked (``ended_as`` GONE: GetJob says DONE), or purged or evicted (CANCELLED)."""
        del self.jobs[job.job_id]
        self.payload_bytes -= len(job.payload)
        self.held_bytes -= JOB_OVERHEAD + len(job.payload)
        job.state = JobState.GONE
        self._touch(job.job_id)
        self._finished(job.job_id, ended_as)
        self.observer.job_changed(job, job.owner, previous_state)
        if self.counts[job.queue].empty:
            self._forget_queue(job.queue)

    def _touch(self, job_id: int) -> None:
        self._touched[job_id] = self.applied_slot
        self._slot_touches.append(job_id)

    def _end_slot(self, slot: int) -> None:
        if self._slot_touches:
            self._touched_by_slot.append((slot, self._slot_touches))
            self._slot_touches = []

    def _prune_dedup(self) -> None:
        expiry, now = self._dedup_expiry, self.clock_us
        while expiry and expiry[0][0] <= now:
            _, queue, key = heapq.heappop(expiry)
            seen = self.dedup.get((queue, key))
            if seen is not None and seen[1] <= now:
                del self.dedup[(queue, key)]
                self.held_bytes -= DEDUP_OVERHEAD + len(key)

    def _remember(self, client_id: str, seq: int, results: list[Result]) -> None:
        remembered = self._results.get(client_id)
        if remembered is None:
            remembered = self._results[client_id] = OrderedDict()
            if len(self._results) > RESULT_CLIENTS:
                self._results.popitem(last=False)
        else:
            self._results.move_to_end(client_id)
        remembered[seq] = results
        if len(remembered) > RESULTS_PER_CLIENT:
            remembered.popitem(last=False)

    # ------------------------------------------------------------------ queries

    def unwritten(self, after_slot: int) -> list[int]:
        """Ids of the jobs touched by slots after ``after_slot``, for the writer."""
        return [job_id for job_id, slot in self._touched.items() if slot > after_slot]

    def queues(self) -> list[str]:
        return sorted({q for q, c in self.counts.items() if not c.empty} | set(self.paused)
                      | set(self.configs))

    def lease_allowance(self, queue: str, now_us: int) -> int:
        """How many jobs of ``queue`` a Lease applied at ``now_us`` could grant (-1: any)."""
        limit = self.configs.get(queue) if self.configs else None
        if limit is None or not limit.limited:
            return -1
        counts = self.counts.get(queue)
        return limit.allowance(counts.leased if counts is not None else 0, now_us)

    def stats(self, queue: str, now_us: int) -> tuple[list[int], int, int, int]:
        """``(ready_by_priority, delayed, leased, dead)`` of one queue at ``now_us``."""
        counts = self.counts.get(queue)
        if counts is None:
            return [0] * PRIORITY_MAX, 0, 0, 0
        counts.fall_due(now_us)
        ready = [r - d for r, d in zip(counts.ready_by_priority, counts.delayed_by_priority)]
        return ready, len(counts.delayed_heap), counts.leased, counts.dead

    def ready_backlogs(self, queue: str) -> dict[int, int]:
        """READY jobs (delayed included) of ``queue`` per owning node."""
        counts = self.counts.get(queue)
        return dict(counts.ready_by_owner) if counts is not None else {}

    def ready_jobs_of(self, queue: str, owner: int, now_us: int) -> list[Job]:
        """``owner``'s due READY jobs of ``queue``, most urgent first (O(jobs))."""
        jobs = [j for j in self.jobs.values()
                if j.owner == owner and j.queue == queue and j.state == JobState.READY
                and j.ready_at_us <= now_us]
        jobs.sort(key=lambda j: (j.priority, j.ready_at_us, j.job_id))
        return jobs

    def owned_by(self, node: int) -> Iterator[Job]:
        """Every job a node owns, in job id order (used when a node starts)."""
        for job_id in sorted(self.jobs):
            job = self.jobs[job_id]
            if job.owner == node:
                yield job

    def touched_items(self) -> list[tuple[int, int]]:
        """``(job_id, last slot)`` of every job not yet covered by a checkpoint."""
        return sorted(self._touched.items())

    def restore_touched(self, items: Iterable[tuple[int, int]]) -> None:
        by_slot: dict[int, list[int]] = {}
        for job_id, slot in items:
            self._touched[job_id] = slot
            by_slot.setdefault(slot, []).append(job_id)
        self._touched_by_slot = deque(sorted(by_slot.items()))

    def restore_dedup(self, queue: str, key: str, job_id: int, expires_at_us: int) -> None:
        self.dedup[(queue, key)] = (job_id, expires_at_us)
        heapq.heappush(self._dedup_expiry, (expires_at_us, queue, key))
        self.held_bytes += DEDUP_OVERHEAD + len(key)

    def restore_config(self, queue: str, settings: QueueSettings) -> None:
        """Put a queue's settings back while loading a snapshot."""
        self.configs[queue] = settings
        self.held_bytes += _config_cost(queue, settings)

    def restore_job(self, job: Job) -> None:
        """Put a job back while loading a snapshot (bypasses commands and observers)."""
        job.queue = self._queue(job.queue)
        self.jobs[job.job_id] = job
        self.payload_bytes += len(job.payload)
        self.held_bytes += JOB_OVERHEAD + len(job.payload)
        counts = self.counts[job.queue]
        if job.state == JobState.READY:
            counts.ready_by_priority[job.priority - 1] += 1
            counts.ready_by_owner[job.owner] = counts.ready_by_owner.get(job.owner, 0) + 1
            if job.ready_at_us > self.clock_us:
                counts.delay(job.ready_at_us, job.priority)
            self.ages.push(job, counts.ready_by_priority[job.priority - 1], self.clock_us)
        elif job.state == JobState.LEASED:
            counts.leased += 1
        elif job.state == JobState.DEAD:
            counts.dead += 1
        elif job.state == JobState.CANCELLED:
            counts.cancelled += 1
            self.cancelled_kept += 1
            heapq.heappush(self._cancelled_ids, job.job_id)


_APPLY = {
    "enqueue": QueueState._enqueue,
    "lease": QueueState._lease,
    "ack": QueueState._ack,
    "nack": QueueState._nack,
    "extend": QueueState._extend,
    "expire": QueueState._expire,
    "reassign": QueueState._reassign,
    "checkpoint": QueueState._checkpoint,
    "cancel": OperatorCommands._cancel,
    "retry": OperatorCommands._retry,
    "set_priority": OperatorCommands._set_priority,
    "pause": OperatorCommands._pause,
    "resume": OperatorCommands._resume,
    "purge": OperatorCommands._purge,
    "queue_config": QueueState._queue_config,
    "create_schedule": ScheduleCommands._create_schedule,
    "delete_schedule": ScheduleCommands._delete_schedule,
    "schedule_tick": ScheduleCommands._schedule_tick,
}




def _config_cost(queue: str, settings: QueueSettings) -> int:
    return CONFIG_OVERHEAD + len(queue) + sum(64 + len(k) for k in settings.weights)


def _proposal_problem(client_id: str, seq: int) -> Refused | None:
    """Why a proposal's identity cannot be recorded (the sessions table must encode it)."""
    if seq > rules.MAX_SEQ:
        return rules.reason(Refusal.BAD_PROPOSAL, f"seq {seq} over {rules.MAX_SEQ}")
    try:
        size = len(client_id.encode())
    except UnicodeEncodeError:
        return rules.reason(Refusal.BAD_PROPOSAL, "client id is not UTF-8")
    if size > rules.MAX_CLIENT_ID_BYTES:
        return rules.reason(Refusal.BAD_PROPOSAL,
                            f"client id of {size} bytes over {rules.MAX_CLIENT_ID_BYTES}")
    return None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
