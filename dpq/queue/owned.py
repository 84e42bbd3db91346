"""The jobs one node serves: its slice of the replicated state, kept for speed.

Every replica holds every job (``QueueState``), but a node hands out only the
jobs it owns. :class:`OwnedJobs` watches ``QueueState`` as its observer and
keeps, for this node:

* a :class:`~dpq._fastheap.FairHeap` per queue of its READY jobs, so a
  long-poll pops the most urgent ready job (by the aged key) in O(log n), and
  within one effective priority takes turns between fairness keys by the weights
  of the queue's settings (each key is a small int, a *tenant*, per queue);
* a min-heap of its leases by expiry, so it knows when to propose an Expire;
* the jobs it has *reserved*: popped for a long-poll, their Lease proposed but
  not applied yet. They stay out of the heap so nobody else gets them; if the
  lease is refused or the proposal is lost they go back with :meth:`release`.

It is derived state: rebuilt from ``QueueState`` on start (:meth:`rebuild`),
never replicated, and it does no I/O. Times are the caller's clock in µs.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from dpq._fastheap import FairHeap
from dpq.queue.state import Job, JobState, QueueState


class OwnedJobs:
    def __init__(self, node_id: int, state: QueueState, aging_step_us: int) -> None:
        self.node_id = node_id
        self._state = state  # read-only here
        self._aging_step_us = aging_step_us
        self.heaps: dict[str, FairHeap] = {}
        # queue -> fairness key -> its tenant in that queue's heap ("" is tenant 0);
        # dropped with the heap when the queue has nothing ready here
        self._tenants: dict[str, dict[str, int]] = {}
        self._leases: list[tuple[int, int, int]] = []  # (expires_at_us, job_id, attempt)
        self.reserved: set[int] = set()
        # queues that got ready jobs since the dispatcher last looked
        self.woken: set[str] = set()

    @property
    def aging_step_us(self) -> int:
        """The step of the aged key (0: strict priority); consumers order by it too."""
        return self._aging_step_us

    # ------------------------------------------------------ QueueState observer

    def job_changed(self, job: Job, previous_owner: int, previous_state: JobState) -> None:
        if (previous_state == JobState.LEASED and job.state != JobState.LEASED
                and self._state.configs and job.queue in self._state.configs):
            self.woken.add(job.queue)  # a limited queue's lease ended, on any node
        mine = job.owner == self.node_id
        if mine and job.state == JobState.READY:
            if job.job_id not in self.reserved:
                heap = self._heap(job.queue)
                if job.job_id in heap:  # still READY: its priority changed, so its key
                    heap.remove(job.job_id)
                tenant = self._tenant(job.queue, job.fairness_key) if job.fairness_key else 0
                heap.push(job.job_id, job.priority, job.created_at_us, job.ready_at_us, tenant)
                self.woken.add(job.queue)
            return
        if previous_owner == self.node_id or previous_state == JobState.READY:
            heap = self.heaps.get(job.queue)
            if heap is not None:
                heap.remove(job.job_id)
                if not heap:
                    del self.heaps[job.queue]  # an idle queue costs no heap
                    self._tenants.pop(job.queue, None)
        if mine and job.state == JobState.LEASED:
            self.reserved.discard(job.job_id)
            heapq.heappush(self._leases, (job.lease_expires_at_us, job.job_id, job.attempt))

    def queue_changed(self, queue: str) -> None:
        """Paused, resumed or configured: waiting consumers look again (a resumed queue may
        deliver), and the heap takes the queue's fairness weights."""
        self.woken.add(queue)
        heap = self.heaps.get(queue)
        if heap is not None:
            self._weigh(queue, heap)

    def rebuild(self) -> None:
        """Derive everything from the state machine (after a restart or a snapshot)."""
        self.heaps.clear()
        self._tenants.clear()
        self._leases.clear()
        self.reserved.clear()
        for job in self._state.jobs.values():
            if job.owner == self.node_id:
                self.job_changed(job, job.owner, JobState.GONE)

    # ------------------------------------------------------------ long-polls

    def reserve(self, queue: str, max_jobs: int, now_us: int) -> list[int]:
        """Pop up to ``max_jobs`` ready jobs for a lease proposal."""
        heap = self.heaps.get(queue)
        if heap is None:
            return []
        ids = list(heap.pop_many(max_jobs, now_us))
        self.reserved.update(ids)
        return ids

    def release(self, job_ids: Iterable[int]) -> None:
        """Put reserved jobs that did not get leased back where they belong."""
        for job_id in job_ids:
            if job_id not in self.reserved:
                continue
            self.reserved.discard(job_id)
            job = self._state.jobs.get(job_id)
            if job is not None:
                self.job_changed(job, job.owner, job.state)

    def next_due_us(self, queue: str) -> int | None:
        heap = self.heaps.get(queue)
        return heap.next_due_us() if heap is not None else None

    def ready_count(self, queue: str, now_us: int) -> int:
        heap = self.heaps.get(queue)
        return heap.ready_count(now_us) if heap is not None else 0

    def take_woken(self) -> set[str]:
        woken, self.woken = self.woken, set()
        return woken

    # ---------------------------------------------------------------- leases

    def expired_leases(self, now_us: int, retry_after_us: int) -> list[tuple[int, int, int]]:
        """``(job_id, attempt, receipt)`` of this node's leases that ran out by ``now_us``.

        Entries for leases since acked, extended or moved are dropped here. A
        lease reported is looked at again ``retry_after_us`` later, in case the
        Expire proposed for it was lost; once the Expire is applied the job no
        longer holds that lease and the entry is dropped.
        """
        out = []
        leases = self._leases
        while leases and leases[0][0] <= now_us:
            _, job_id, attempt = heapq.heappop(leases)
            job = self._state.jobs.get(job_id)
            if (job is None or job.state != JobState.LEASED or job.attempt != attempt
                    or job.owner != self.node_id or job.lease_expires_at_us > now_us):
                continue  # acked, expired, moved, or extended (its newer entry waits)
            out.append((job_id, attempt, job.receipt))
        for job_id, attempt, _ in out:
            heapq.heappush(leases, (now_us + retry_after_us, job_id, attempt))
        return out

    def depth(self, now_us: int) -> int:
        """Ready jobs this node holds, over all queues (health reports)."""
        return sum(heap.ready_count(now_us) for heap in self.heaps.values())

    def _heap(self, queue: str) -> FairHeap:
        heap = self.heaps.get(queue)
        if heap is None:
            heap = self.heaps[queue] = FairHeap(self._aging_step_us)
            self._weigh(queue, heap)
        return heap

    def _tenant(self, queue: str, key: str) -> int:
        """The tenant of ``key`` in ``queue``'s heap (new keys get the next int)."""
        tenants = self._tenants.setdefault(queue, {})
        tenant = tenants.get(key)
        if tenant is None:
            tenant = tenants[key] = len(tenants) + 1
            settings = self._state.configs.get(queue)
            if settings is not None and key in settings.weights:
                self.heaps[queue].set_weight(tenant, settings.weights[key])
        return tenant

    def _weigh(self, queue: str, heap: FairHeap) -> None:
        """Give ``heap`` the fairness weights of ``queue``'s settings (1 when none)."""
        settings = self._state.configs.get(queue)
        weights = settings.weights if settings is not None else {}
        heap.set_default_weight((settings.default_weight or 1) if settings is not None else 1)
        for key, tenant in self._tenants.get(queue, {}).items():
            if key in weights:
                heap.set_weight(tenant, weights[key])
            else:
                heap.reset_weight(tenant)
        if "" in weights:
            heap.set_weight(0, weights[""])
        else:
            heap.reset_weight(0)
