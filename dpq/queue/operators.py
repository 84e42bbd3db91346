"""The operators' commands on the queue state machine: Cancel, Retry, SetPriority,
Pause, Resume and Purge (issue 14), each one log command whose selector
(:mod:`dpq.queue.selector`) every replica resolves against the same state.

:class:`OperatorCommands` is a part of :class:`~dpq.queue.state.QueueState`, kept
in its own module: it reads and changes the same jobs, counters and pauses through
the state's own helpers (``_keep``, ``_touch``, ``_leave_ready``, ``_enter_ready``),
and it is applied, refused and logged like every other command. Pure: no I/O, no
clock.

* Cancel: READY (delayed too) and DEAD jobs become CANCELLED at once; a LEASED one
  is marked and becomes CANCELLED when its lease ends without an ack.
* Retry: DEAD and CANCELLED jobs become READY now, with a fresh attempt budget.
* SetPriority: a READY job keeps its ready time, so its aged key is recomputed.
* Pause / Resume: a paused queue leases nothing; a timed pause ends by leader time.
* Purge: every job of the queue that is not leased is removed.

The newest ``MAX_CANCELLED_KEPT`` cancelled jobs are kept for Retry; older ones
are removed in job id order, the same on every replica.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from dpq.queue import rules, selector
from dpq.queue.jobs import Job, JobState
from dpq.queue.results import Affected, Paused, Refusal, Refused
from dpq.queue.rules import PRIORITY_MAX
from dpq.v1 import log_pb2

if TYPE_CHECKING:
    from dpq.queue.state import QueueState

#: Cancelled jobs kept (with their payloads) so RetryJobs can bring them back.
MAX_CANCELLED_KEPT = 10_000
#: Acked and removed jobs whose end a replica remembers for GetJob (not replicated).
FINISHED_REMEMBERED = 65_536
#: Queues paused at once (each pause of a new name costs a little memory on every replica).
MAX_PAUSED_QUEUES = 10_000

#: The commands only operators send (GetJob and friends read; these change).
OPERATOR_KINDS = frozenset({"cancel", "retry", "set_priority", "pause", "resume", "purge",
                            "queue_config", "create_schedule", "delete_schedule"})

#: Held but not served: no owner hands them out, Retry brings them back.
UNSERVED = (JobState.DEAD, JobState.CANCELLED)


class OperatorCommands:
    """The operators' commands of :class:`~dpq.queue.state.QueueState` (see the module)."""

    def _cancel(self: QueueState, cmd: log_pb2.CancelCommand) -> Affected:
        """READY (delayed too) and DEAD jobs become CANCELLED; a LEASED one is marked and
        becomes CANCELLED when its lease ends without an ack (an ack still succeeds)."""
        count = deferred = 0
        delayed: set[str] = set()
        for job in selector.select(self.jobs, cmd.selector, self.clock_us):
            state = job.state
            if state == JobState.LEASED:
                if not job.cancel_requested:
                    self._keep(job)
                    job.cancel_requested = True
                    self._touch(job.job_id)
                    deferred += 1
                continue
            if state == JobState.CANCELLED:
                continue
            self._keep(job)
            if state == JobState.READY:
                if job.ready_at_us > self.clock_us:
                    delayed.add(job.queue)
                self._leave_ready(job)
            else:
                self.counts[job.queue].dead -= 1
            self._become_cancelled(job)
            self._touch(job.job_id)
            self.observer.job_changed(job, job.owner, state)
            count += 1
        self._recount_delayed(delayed)
        return Affected(count, deferred)

    def _retry(self: QueueState, cmd: log_pb2.RetryCommand) -> Affected:
        """DEAD and CANCELLED jobs become READY now, with a fresh attempt budget (the
        DLQ redrive). Their ready time becomes now: they queue behind what waited."""
        now, count = self.clock_us, 0
        for job in selector.select(self.jobs, cmd.selector, now):
            state = job.state
            if state not in UNSERVED:
                continue
            self._keep(job)
            counts = self.counts[job.queue]
            if state == JobState.DEAD:
                counts.dead -= 1
            else:
                counts.cancelled -= 1
                self.cancelled_kept -= 1
                self.finished.pop(job.job_id, None)
            job.attempt = 0
            job.cancel_requested = False
            job.ready_at_us = now
            self._enter_ready(job)
            self._touch(job.job_id)
            self.observer.job_changed(job, job.owner, state)
            count += 1
        return Affected(count)

    def _set_priority(self: QueueState, cmd: log_pb2.SetPriorityCommand) -> Affected:
        """Every selected job gets the new priority; a READY one keeps its ready time, so
        its aged key is recomputed from it (its place in time)."""
        priority, count = cmd.priority, 0
        delayed: set[str] = set()
        for job in selector.select(self.jobs, cmd.selector, self.clock_us):
            if job.priority == priority:
                continue
            self._keep(job)
            if job.state == JobState.READY:
                by_priority = self.counts[job.queue].ready_by_priority
                by_priority[job.priority - 1] -= 1
                by_priority[priority - 1] += 1
                if job.ready_at_us > self.clock_us:
                    delayed.add(job.queue)
            previous, job.priority = job.priority, priority
            if job.state == JobState.READY:  # its entry under the old priority is stale now
                by_priority = self.counts[job.queue].ready_by_priority
                self.ages.left(job, previous, by_priority[previous - 1])
                self.ages.push(job, by_priority[priority - 1], self.clock_us)
            self._touch(job.job_id)
            self.observer.job_changed(job, job.owner, job.state)
            count += 1
        self._recount_delayed(delayed)
        return Affected(count)

    def _pause(self: QueueState, cmd: log_pb2.PauseCommand) -> Paused | Refused:
        queue = cmd.queue or rules.DEFAULT_QUEUE
        if queue not in self.paused and len(self.paused) >= MAX_PAUSED_QUEUES:
            return rules.reason(Refusal.INVALID, f"{MAX_PAUSED_QUEUES} queues are paused "
                                                 "already: resume some first")
        was = self.is_paused(queue, self.clock_us)
        until = self.clock_us + cmd.duration_ms * 1000 if cmd.duration_ms else 0
        self.paused[queue] = until
        self.observer.queue_changed(queue)
        return Paused(queue, True, until, was)

    def _resume(self: QueueState, cmd: log_pb2.ResumeCommand) -> Paused:
        queue = cmd.queue or rules.DEFAULT_QUEUE
        was = self.is_paused(queue, self.clock_us)
        self.paused.pop(queue, None)
        self.observer.queue_changed(queue)
        return Paused(queue, False, 0, was)

    def _purge(self: QueueState, cmd: log_pb2.PurgeCommand) -> Affected:
        """Remove every job of the queue that is not leased (READY, delayed, DEAD and
        CANCELLED alike); GetJob then says CANCELLED."""
        queue = cmd.queue or rules.DEFAULT_QUEUE
        doomed = [job for job in self.jobs.values()
                  if job.queue == queue and job.state != JobState.LEASED]
        for job in doomed:
            self._remove(job)
        if doomed:
            self._recount_delayed({queue})
        return Affected(len(doomed))

    def is_paused(self: QueueState, queue: str, now_us: int) -> bool:
        until = self.paused.get(queue)
        return until is not None and (until == 0 or now_us < until)

    def _prune_pauses(self: QueueState) -> None:
        now = self.clock_us
        for queue in [q for q, until in self.paused.items() if until and until <= now]:
            del self.paused[queue]
            self.observer.queue_changed(queue)

    def _become_cancelled(self: QueueState, job: Job) -> None:
        """``job`` (READY or DEAD counters already left, or just unleased) is CANCELLED."""
        job.state = JobState.CANCELLED
        job.cancel_requested = False
        self.counts[job.queue].cancelled += 1
        self.totals.of(job.queue).cancelled += 1
        self.cancelled_kept += 1
        heapq.heappush(self._cancelled_ids, job.job_id)
        self._finished(job.job_id, JobState.CANCELLED)

    def _evict_cancelled(self: QueueState) -> None:
        """Remove the oldest cancelled jobs (by id) past ``MAX_CANCELLED_KEPT``."""
        ids, jobs = self._cancelled_ids, self.jobs
        while self.cancelled_kept > MAX_CANCELLED_KEPT and ids:
            job = jobs.get(heapq.heappop(ids))
            if job is not None and job.state == JobState.CANCELLED:
                self._remove(job)

    def _remove(self: QueueState, job: Job) -> None:
        """Take a job that is not leased out of the state for good (Purge, eviction)."""
        self._keep(job)
        counts, state = self.counts[job.queue], job.state
        if state == JobState.READY:
            self._leave_ready(job)
        elif state == JobState.DEAD:
            counts.dead -= 1
        elif state == JobState.CANCELLED:
            counts.cancelled -= 1
            self.cancelled_kept -= 1
        self._drop(job, state, JobState.CANCELLED)

    def _recount_delayed(self: QueueState, queues: set[str]) -> None:
        """Rebuild the delay counters of ``queues`` after jobs left READY (or changed
        priority) before they were due: the counters assume only time removes a delay."""
        if not queues:
            return
        now = self.clock_us
        for queue in queues:
            counts = self.counts.get(queue)
            if counts is not None:
                counts.delayed_heap = []
                counts.delayed_by_priority = [0] * PRIORITY_MAX
        for job in self.jobs.values():
            if (job.queue in queues and job.state == JobState.READY
                    and job.ready_at_us > now):
                self.counts[job.queue].delay(job.ready_at_us, job.priority)

    def _finished(self: QueueState, job_id: int, how: JobState) -> None:
        finished = self.finished
        finished[job_id] = (how, self.clock_us)
        if len(finished) > FINISHED_REMEMBERED:
            finished.popitem(last=False)
