"""Managing jobs and queues: :class:`AsyncAdmin` (asyncio) and :class:`Admin` (blocking).

::

    from dpq.client import Admin

    with Admin("127.0.0.1:7100") as admin:
        job = admin.get_job(17)                      # JobInfo: state, attempt, last_error …
        for job in admin.iter_jobs(queue="mail", state="dead"):
            print(job.job_id, job.last_error)
        admin.retry_jobs(queue="mail", state="dead")  # Affected(count, deferred, slot)
        admin.pause_queue("mail", duration=600)       # or a timedelta; None: until resumed
        print(admin.explain_job(17).reasons)

Reads (``get_job``, ``list_jobs``, ``explain_job``) are answered from the
replica of the node asked (a gateway asks the leader). Every change is one
command in the cluster's log: a bulk action applies to what its selector
matches when the command is applied, on every replica alike.

Selectors: the bulk actions take a :class:`Selector`, or the same fields as
keywords (``job_ids=``, ``queue=``, ``state=``, ``priority=``,
``dedup_key_prefix=``, ``all=``). Every field given must match; a selector
with none is refused by the server unless ``all=True``. States are
:class:`JobState` members or their names (``"dead"``).

Retries: ``UNAVAILABLE`` is retried on the next endpoint, as for producers.
A change whose answer was lost may then be applied twice; each change is
idempotent (cancelling, retrying or re-prioritizing the same jobs again does
nothing more) but the answer of the second try counts only what it changed.

Only types are checked here; the limits (priority 1..5, at most 10,000 job
ids, a pause of at most 30 days, …) are the server's, and its
``INVALID_ARGUMENT`` message (:class:`~dpq.client.InvalidArgumentError`) names
the field and the limit.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from dpq.client._closing import AsyncClient, BlockingClient
from dpq.client._endpoints import Channels, Endpoints, PathLike, Targets, parse_targets, security
from dpq.client._loop import LoopThread
from dpq.client._retry import RetryPolicy, with_retries
from dpq.client.errors import ClientClosedError, NotFoundError, UnknownJobError
from dpq.client.schedules import AsyncSchedules, Schedules
from dpq.v1 import queue_pb2

T = TypeVar("T")

#: Jobs per ListJobs page when none is asked for (the server's default too).
DEFAULT_LIMIT = 100


class JobState(StrEnum):
    """Where a job stands (``dpq.v1.JobState``, lower case)."""

    READY = "ready"          # deliverable now
    DELAYED = "delayed"      # ready once its delay (or a nack's) is over
    LEASED = "leased"        # held by a consumer under a lease
    DEAD = "dead"            # out of attempts: retry_jobs brings it back
    DONE = "done"            # acked (known only for a while after)
    CANCELLED = "cancelled"  # removed by cancel_jobs (the newest are kept for retry_jobs)
    UNKNOWN = "unknown"      # a state this client version does not know (never sent)


class Hold(StrEnum):
    """What keeps a job from being delivered now (``dpq.v1.Hold``, lower case, no ``HOLD_``)."""

    DELAYED = "delayed"
    PAUSED = "paused"
    LEASED = "leased"
    DEAD = "dead"
    CANCELLED = "cancelled"
    DONE = "done"
    PRIORITY_AHEAD = "priority_ahead"
    NO_CONSUMERS = "no_consumers"
    IN_FLIGHT_LIMIT = "in_flight_limit"
    RATE_LIMIT = "rate_limit"
    UNKNOWN = "unknown"  # a hold this client version does not know


def _time(us: int) -> datetime | None:
    return datetime.fromtimestamp(us / 1e6, tz=UTC) if us else None


def _state(value: int) -> JobState:
    name = queue_pb2.JobState.Name(value) if value in queue_pb2.JobState.values() else ""
    return JobState.__members__.get(name, JobState.UNKNOWN)


def _hold(value: int) -> Hold:
    name = queue_pb2.Hold.Name(value) if value in queue_pb2.Hold.values() else ""
    return Hold.__members__.get(name.removeprefix("HOLD_"), Hold.UNKNOWN)


def state_pb(state: JobState | str | None) -> int:
    """A state (``"dead"``, ``JobState.DEAD``; None: any) → ``dpq.v1.JobState``."""
    if state is None or state == "":
        return queue_pb2.JOB_STATE_UNSPECIFIED
    if not isinstance(state, str):
        raise TypeError(f"state must be a JobState or its name, not {type(state).__name__}")
    try:
        known = JobState(state.lower())
    except ValueError:
        known = JobState.UNKNOWN
    if known is JobState.UNKNOWN:
        names = ", ".join(s.value for s in JobState if s is not JobState.UNKNOWN)
        raise ValueError(f"unknown job state {state!r}: one of {names}")
    return queue_pb2.JobState.Value(known.name)


def _int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class JobInfo:
    """One job as the cluster sees it (``dpq.v1.JobInfo``).

    ``payload`` is None when it was not asked for (``payload_bytes`` is always
    set). Times are UTC; None where unknown or not applicable
    (``lease_expires_at`` outside LEASED, ``finished_at`` outside DONE and
    CANCELLED). ``aged_key_us``: the key the owner's heap orders the job by
    (lower is delivered first). ``cancel_requested``: cancelled once its lease
    ends unacked.
    """

    job_id: int
    queue: str
    priority: int
    state: JobState
    attempt: int
    owner_node: int
    payload_bytes: int
    payload: bytes | None
    created_at: datetime | None
    ready_at: datetime | None
    lease_expires_at: datetime | None
    finished_at: datetime | None
    aged_key_us: int
    consumer_id: str
    last_error: str
    dedup_key: str
    cancel_requested: bool
    fairness_key: str = ""

    @classmethod
    def from_pb(cls, pb: queue_pb2.JobInfo, with_payload: bool = True) -> JobInfo:
        """The JobInfo of a ``dpq.v1.JobInfo``."""
        return cls(job_id=pb.job_id, queue=pb.queue, priority=pb.priority,
                   state=_state(pb.state), attempt=pb.attempt, owner_node=pb.owner_node,
                   payload_bytes=pb.payload_bytes,
                   payload=bytes(pb.payload) if with_payload else None,
                   created_at=_time(pb.created_at_us), ready_at=_time(pb.ready_at_us),
                   lease_expires_at=_time(pb.lease_expires_at_us),
                   finished_at=_time(pb.finished_at_us), aged_key_us=pb.aged_key_us,
                   consumer_id=pb.consumer_id, last_error=pb.last_error,
                   dedup_key=pb.dedup_key, cancel_requested=pb.cancel_requested,
                   fairness_key=pb.fairness_key)


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of ``list_jobs``: ready and delayed jobs first in delivery order, then
    the others oldest first. ``next_page_token`` is "" on the last page."""

    jobs: tuple[JobInfo, ...]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class Affected:
    """What a bulk action did: ``count`` jobs changed; ``deferred`` (cancel only):
    leased jobs cancelled once their lease ends unacked; ``slot``: the log slot of
    the command."""

    count: int
    deferred: int
    slot: int


@dataclass(frozen=True, slots=True)
class QueuePause:
    """A queue's pause after ``pause_queue`` / ``resume_queue``. ``paused_until`` is
    None while paused until resumed; ``was_paused``: (resume) it was paused before."""

    queue: str
    paused: bool
    paused_until: datetime | None
    was_paused: bool
    slot: int


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """A queue's settings (``dpq.v1.QueueConfig``); 0 is "not set": no limit, or the
    node's default. ``fairness_weights`` maps a fairness key to its weight."""

    queue: str
    max_in_flight: int
    max_rate_per_s: float
    burst: int
    fairness_weights: dict[str, int]
    default_fairness_weight: int
    max_attempts: int
    slot: int


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a job is not being worked on (``dpq.v1.ExplainJobResponse``).

    ``ahead_on_node`` / ``ahead_in_cluster``: ready jobs of its queue delivered
    before it, on its owner node and on every node. ``holds`` and ``reasons``
    (one sentence per hold, for people). ``drain_rate_per_s`` and
    ``estimated_start`` (None when it cannot be estimated) are estimates.
    ``waiting_consumers``: on the owner node, None when the node that answered
    could not know. ``answered_by`` node, as of log slot ``as_of_slot``.
    """

    job: JobInfo
    ahead_on_node: int
    ahead_in_cluster: int
    holds: tuple[Hold, ...]
    reasons: tuple[str, ...]
    drain_rate_per_s: float
    estimated_start: datetime | None
    waiting_consumers: int | None
    answered_by: int
    as_of_slot: int

    @classmethod
    def from_pb(cls, pb: queue_pb2.ExplainJobResponse) -> Explanation:
        return cls(job=JobInfo.from_pb(pb.job, with_payload=False),
                   ahead_on_node=pb.ahead_on_node, ahead_in_cluster=pb.ahead_in_cluster,
                   holds=tuple(_hold(h) for h in pb.holds), reasons=tuple(pb.reasons),
                   drain_rate_per_s=pb.drain_rate_per_s,
                   estimated_start=_time(pb.estimated_start_us),
                   waiting_consumers=pb.waiting_consumers if pb.consumers_known else None,
                   answered_by=pb.answered_by, as_of_slot=pb.as_of_slot)


@dataclass(frozen=True, slots=True)
class Selector:
    """Which jobs a bulk action applies to: every field given must match (AND).

    ``job_ids``: these jobs; ``queue``; ``state`` (a :class:`JobState` or its
    name); ``priority`` (1..5); ``dedup_key_prefix``: jobs whose dedup key
    starts with it; ``all``: select every job of every queue (needed when no
    other field is given).
    """

    job_ids: tuple[int, ...] = ()
    queue: str | None = None
    state: JobState | str | None = None
    priority: int | None = None
    dedup_key_prefix: str | None = None
    all: bool = False

    @property
    def empty(self) -> bool:
        """No field given (the server refuses it unless ``all``)."""
        return not (self.job_ids or self.queue or self.state or self.priority
                    or self.dedup_key_prefix)

    def to_pb(self) -> queue_pb2.JobSelector:
        """The ``dpq.v1.JobSelector``; raises TypeError / ValueError for wrong types."""
        ids = [_int("a job id", i) for i in self.job_ids]
        for name, text in (("queue", self.queue), ("dedup_key_prefix", self.dedup_key_prefix)):
            if text is not None and not isinstance(text, str):
                raise TypeError(f"{name} must be a str, not {type(text).__name__}")
        return queue_pb2.JobSelector(
            job_ids=ids, queue=self.queue or "", state=state_pb(self.state),
            priority=0 if self.priority is None else _int("priority", self.priority),
            dedup_key_prefix=self.dedup_key_prefix or "", all=bool(self.all))


def as_selector(given: Selector | None = None, *, job_ids: Iterable[int] | None = None,
             queue: str | None = None, state: JobState | str | None = None,
             priority: int | None = None, dedup_key_prefix: str | None = None,
             all: bool = False) -> Selector:
    """A :class:`Selector` from one or from keywords (not both)."""
    keywords = (job_ids is not None or queue is not None or state is not None
                or priority is not None or dedup_key_prefix is not None or all)
    if given is not None:
        if not isinstance(given, Selector):
            raise TypeError(f"selector must be a Selector, not {type(given).__name__} "
                            "(give job ids as job_ids=[…])")
        if keywords:
            raise TypeError("give a Selector or keyword filters, not both")
        return given
    if isinstance(job_ids, (int, str, bytes)):
        raise TypeError("job_ids must be an iterable of ints (job_ids=[17])")
    return Selector(tuple(job_ids or ()), queue, state, priority, dedup_key_prefix, all)


def duration_ms(duration: float | timedelta | None) -> int:
    """A pause's length in whole milliseconds, rounded up (None → 0: until resumed)."""
    if duration is None:
        return 0
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"duration must be seconds or a timedelta, not {type(duration).__name__}")
    if not seconds > 0:
        raise ValueError(f"duration must be positive (got {duration!r}); None pauses until "
                         "resume_queue")
    return math.ceil(seconds * 1000)


class AsyncAdmin(AsyncClient, AsyncSchedules):
    """Manages jobs and queues from asyncio code (see the module's doc).

    ``targets``, ``timeout`` (seconds per attempt), ``retry``, ``tls_dir``,
    ``root_certificates`` and ``token``: as for :class:`~dpq.client.AsyncProducer`.
    Use it as ``async with AsyncAdmin(...) as admin:`` or call :meth:`close`.
    """

    def __init__(self, targets: Targets = None, *, timeout: float = 20.0,
                 retry: RetryPolicy | None = None, tls_dir: PathLike | None = None,
                 root_certificates: bytes | PathLike | None = None,
                 token: str | None = None) -> None:
        self._channels = Channels(security(tls_dir, root_certificates, token))
        self._endpoints = Endpoints(self._channels, parse_targets(targets))
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._closed = False

    # ------------------------------------------------------------------ reads

    async def get_job(self, job_id: int, *, payload: bool = True) -> JobInfo:
        """The job ``job_id``; its payload too unless ``payload=False``.

        Raises :class:`~dpq.client.UnknownJobError` (a ``JobNotFoundError``) if the
        cluster knows no such job.
        """
        request = queue_pb2.GetJobRequest(job_id=_int("job_id", job_id),
                                          without_payload=not payload)
        pb = await self._call("GetJob", lambda stub: stub.GetJob, request, job_id)
        return JobInfo.from_pb(pb, with_payload=payload)

    async def list_jobs(self, queue: str | None = None, state: JobState | str | None = None,
                        priority: int | None = None, limit: int = DEFAULT_LIMIT,
                        page_token: str = "", *, payload: bool = False) -> JobPage:
        """One page of jobs matching every filter given (None: any); ``limit`` jobs at
        most (the server allows up to 1,000). Pass the page's ``next_page_token`` as
        ``page_token`` for the next one, or use :meth:`iter_jobs`. DONE jobs are
        never listed."""
        request = queue_pb2.ListJobsRequest(
            queue=queue or "", state=state_pb(state),
            priority=0 if priority is None else _int("priority", priority),
            limit=_int("limit", limit), page_token=page_token, with_payload=payload)
        pb = await self._call("ListJobs", lambda stub: stub.ListJobs, request)
        return JobPage(tuple(JobInfo.from_pb(j, with_payload=payload) for j in pb.jobs),
                       pb.next_page_token)

    async def iter_jobs(self, queue: str | None = None, state: JobState | str | None = None,
                        priority: int | None = None, *, page_size: int = DEFAULT_LIMIT,
                        payload: bool = False) -> AsyncIterator[JobInfo]:
        """Every job :meth:`list_jobs` matches, page after page."""
        token = ""
        while True:
            page = await self.list_jobs(queue, state, priority, page_size, token,
                                        payload=payload)
            for job in page.jobs:
                yield job
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def explain_job(self, job_id: int) -> Explanation:
        """Why job ``job_id`` is not being worked on now, and when it should be.

        Raises :class:`~dpq.client.UnknownJobError` if the cluster knows no such job.
        """
        request = queue_pb2.ExplainJobRequest(job_id=_int("job_id", job_id))
        pb = await self._call("ExplainJob", lambda stub: stub.ExplainJob, request, job_id)
        return Explanation.from_pb(pb)

    # ---------------------------------------------------------------- changes

    async def cancel_jobs(self, selector: Selector | None = None, /, *,
                          job_ids: Iterable[int] | None = None, queue: str | None = None,
                          state: JobState | str | None = None, priority: int | None = None,
                          dedup_key_prefix: str | None = None, all: bool = False) -> Affected:
        """Cancel the selected jobs. Leased ones are cancelled when their lease ends
        without an ack (``Affected.deferred``); cancelled jobs can be retried."""
        chosen = as_selector(selector, job_ids=job_ids, queue=queue, state=state,
                          priority=priority, dedup_key_prefix=dedup_key_prefix, all=all)
        request = queue_pb2.CancelJobsRequest(selector=chosen.to_pb())
        return _affected(await self._call("CancelJobs", lambda s: s.CancelJobs, request))

    async def retry_jobs(self, selector: Selector | None = None, /, *,
                         job_ids: Iterable[int] | None = None, queue: str | None = None,
                         state: JobState | str | None = None, priority: int | None = None,
                         dedup_key_prefix: str | None = None, all: bool = False) -> Affected:
        """Make the selected dead (or cancelled) jobs ready again, with fresh attempts."""
        chosen = as_selector(selector, job_ids=job_ids, queue=queue, state=state,
                          priority=priority, dedup_key_prefix=dedup_key_prefix, all=all)
        request = queue_pb2.RetryJobsRequest(selector=chosen.to_pb())
        return _affected(await self._call("RetryJobs", lambda s: s.RetryJobs, request))

    async def set_priority(self, priority: int, selector: Selector | None = None, /, *,
                           job_ids: Iterable[int] | None = None, queue: str | None = None,
                           state: JobState | str | None = None,
                           current_priority: int | None = None,
                           dedup_key_prefix: str | None = None, all: bool = False) -> Affected:
        """Give the selected jobs priority ``priority`` (1 most urgent … 5).
        ``current_priority``: select jobs that have this priority now."""
        chosen = as_selector(selector, job_ids=job_ids, queue=queue, state=state,
                          priority=current_priority, dedup_key_prefix=dedup_key_prefix,
                          all=all)
        request = queue_pb2.SetPriorityRequest(selector=chosen.to_pb(),
                                               priority=_int("priority", priority))
        return _affected(await self._call("SetPriority", lambda s: s.SetPriority, request))

    async def pause_queue(self, queue: str,
                          duration: float | timedelta | None = None) -> QueuePause:
        """Deliver nothing of ``queue`` for ``duration`` (seconds or a timedelta; None:
        until :meth:`resume_queue`). Enqueues and settlements go on."""
        request = queue_pb2.PauseQueueRequest(queue=queue, duration_ms=duration_ms(duration))
        return _paused(await self._call("PauseQueue", lambda s: s.PauseQueue, request))

    async def resume_queue(self, queue: str) -> QueuePause:
        """Deliver ``queue`` again (``was_paused`` says whether it was paused)."""
        request = queue_pb2.ResumeQueueRequest(queue=queue)
        return _paused(await self._call("ResumeQueue", lambda s: s.ResumeQueue, request))

    async def purge_queue(self, queue: str) -> Affected:
        """Remove every job of ``queue`` for good (leased ones when their lease ends)."""
        request = queue_pb2.PurgeQueueRequest(queue=queue)
        return _affected(await self._call("PurgeQueue", lambda s: s.PurgeQueue, request))

    async def set_queue_config(
        self, queue: str, *, max_in_flight: int | None = None,
        max_rate_per_s: float | None = None, burst: int | None = None,
        fairness_weights: Mapping[str, int] | None = None,
        replace_fairness_weights: bool = False,
        default_fairness_weight: int | None = None, max_attempts: int | None = None,
    ) -> QueueConfig:
        """Change the settings given (None: leave as is; 0: no limit / the default).

        ``fairness_weights`` are merged key by key (weight 0 removes a key), or replace
        the whole list with ``replace_fairness_weights``. Returns the settings after."""
        request = queue_pb2.SetQueueConfigRequest(
            queue=queue, replace_fairness_weights=replace_fairness_weights,
            fairness_weights=[queue_pb2.FairnessWeight(key=k, weight=_int("weight", w))
                              for k, w in (fairness_weights or {}).items()])
        for name, value in (("max_in_flight", max_in_flight), ("burst", burst),
                            ("default_fairness_weight", default_fairness_weight),
                            ("max_attempts", max_attempts)):
            if value is not None:
                setattr(request, name, _int(name, value))
        if max_rate_per_s is not None:
            request.max_rate_per_s = float(max_rate_per_s)
        return _config(await self._call("SetQueueConfig", lambda s: s.SetQueueConfig, request))

    async def get_queue_config(self, queue: str) -> QueueConfig:
        """The settings of ``queue`` (all 0 when none were set)."""
        request = queue_pb2.GetQueueConfigRequest(queue=queue)
        return _config(await self._call("GetQueueConfig", lambda s: s.GetQueueConfig, request))

    # ------------------------------------------------------------------ admin

    async def close(self) -> None:
        """Close the connections."""
        self._closed = True
        await self._channels.close()

    async def _call(self, method: str, rpc: Callable[[object], Callable[..., Awaitable[T]]],
                    request: object, job_id: int | None = None) -> T:
        if self._closed:
            raise ClientClosedError("the admin client is closed")

        async def attempt(address: str) -> T:
            return await rpc(self._channels.stub(address))(request, timeout=self._timeout)

        try:
            return await with_retries(self._endpoints, self._retry, method, attempt)
        except NotFoundError as exc:
            if job_id is None:
                raise
            raise UnknownJobError(job_id, exc) from None


def _affected(pb: queue_pb2.JobsAffected) -> Affected:
    return Affected(pb.count, pb.deferred, pb.slot)


def _config(pb: queue_pb2.QueueConfig) -> QueueConfig:
    return QueueConfig(pb.queue, pb.max_in_flight, pb.max_rate_per_s, pb.burst,
                       {w.key: w.weight for w in pb.fairness_weights},
                       pb.default_fairness_weight, pb.max_attempts, pb.slot)


def _paused(pb: queue_pb2.QueuePaused) -> QueuePause:
    return QueuePause(pb.queue, pb.paused, _time(pb.paused_until_us), pb.was_paused, pb.slot)


class Admin(BlockingClient, Schedules):
    """Manages jobs and queues from blocking code: the methods of :class:`AsyncAdmin`,
    with the same arguments, that wait for their answer. Thread-safe. Use it as
    ``with Admin(...) as admin:`` or call :meth:`close`."""

    def __init__(self, targets: Targets = None, *, timeout: float = 20.0,
                 retry: RetryPolicy | None = None, tls_dir: PathLike | None = None,
                 root_certificates: bytes | PathLike | None = None,
                 token: str | None = None) -> None:
        self._loop = LoopThread("dpq-admin")

        async def make() -> AsyncAdmin:
            return AsyncAdmin(targets, timeout=timeout, retry=retry, tls_dir=tls_dir,
                              root_certificates=root_certificates, token=token)

        try:
            self._async = self._loop.run(make())
        except BaseException:
            self._loop.close()
            raise

    def get_job(self, job_id: int, *, payload: bool = True) -> JobInfo:
        """See :meth:`AsyncAdmin.get_job`."""
        return self._loop.run(self._async.get_job(job_id, payload=payload))

    def list_jobs(self, queue: str | None = None, state: JobState | str | None = None,
                  priority: int | None = None, limit: int = DEFAULT_LIMIT,
                  page_token: str = "", *, payload: bool = False) -> JobPage:
        """See :meth:`AsyncAdmin.list_jobs`."""
        return self._loop.run(self._async.list_jobs(queue, state, priority, limit, page_token,
                                                    payload=payload))

    def iter_jobs(self, queue: str | None = None, state: JobState | str | None = None,
                  priority: int | None = None, *, page_size: int = DEFAULT_LIMIT,
                  payload: bool = False) -> Iterator[JobInfo]:
        """Every job :meth:`list_jobs` matches, page after page (fetched as needed)."""
        token = ""
        while True:
            page = self.list_jobs(queue, state, priority, page_size, token, payload=payload)
            yield from page.jobs
            if not page.next_page_token:
                return
            token = page.next_page_token

    def explain_job(self, job_id: int) -> Explanation:
        """See :meth:`AsyncAdmin.explain_job`."""
        return self._loop.run(self._async.explain_job(job_id))

    def cancel_jobs(self, selector: Selector | None = None, /, *,
                    job_ids: Iterable[int] | None = None, queue: str | None = None,
                    state: JobState | str | None = None, priority: int | None = None,
                    dedup_key_prefix: str | None = None, all: bool = False) -> Affected:
        """See :meth:`AsyncAdmin.cancel_jobs`."""
        return self._loop.run(self._async.cancel_jobs(
            selector, job_ids=job_ids, queue=queue, state=state, priority=priority,
            dedup_key_prefix=dedup_key_prefix, all=all))

    def retry_jobs(self, selector: Selector | None = None, /, *,
                   job_ids: Iterable[int] | None = None, queue: str | None = None,
                   state: JobState | str | None = None, priority: int | None = None,
                   dedup_key_prefix: str | None = None, all: bool = False) -> Affected:
        """See :meth:`AsyncAdmin.retry_jobs`."""
        return self._loop.run(self._async.retry_jobs(
            selector, job_ids=job_ids, queue=queue, state=state, priority=priority,
            dedup_key_prefix=dedup_key_prefix, all=all))

    def set_priority(self, priority: int, selector: Selector | None = None, /, *,
                     job_ids: Iterable[int] | None = None, queue: str | None = None,
                     state: JobState | str | None = None, current_priority: int | None = None,
                     dedup_key_prefix: str | None = None, all: bool = False) -> Affected:
        """See :meth:`AsyncAdmin.set_priority`."""
        return self._loop.run(self._async.set_priority(
            priority, selector, job_ids=job_ids, queue=queue, state=state,
            current_priority=current_priority, dedup_key_prefix=dedup_key_prefix, all=all))

    def pause_queue(self, queue: str,
                    duration: float | timedelta | None = None) -> QueuePause:
        """See :meth:`AsyncAdmin.pause_queue`."""
        return self._loop.run(self._async.pause_queue(queue, duration))

    def resume_queue(self, queue: str) -> QueuePause:
        """See :meth:`AsyncAdmin.resume_queue`."""
        return self._loop.run(self._async.resume_queue(queue))

    def purge_queue(self, queue: str) -> Affected:
        """See :meth:`AsyncAdmin.purge_queue`."""
        return self._loop.run(self._async.purge_queue(queue))

    def set_queue_config(self, queue: str, **changes: Any) -> QueueConfig:
        """See :meth:`AsyncAdmin.set_queue_config` (the same keyword arguments)."""
        return self._loop.run(self._async.set_queue_config(queue, **changes))

    def get_queue_config(self, queue: str) -> QueueConfig:
        """See :meth:`AsyncAdmin.get_queue_config`."""
        return self._loop.run(self._async.get_queue_config(queue))

