"""A job handed to a consumer: :class:`AsyncJob` (awaitable methods) and :class:`Job` (blocking).

A job is held under a lease until it is acked (done) or nacked (given back).
While held, the consumer extends its lease in the background, so a job is
not handed to anyone else while its handler is still working (for at most
the consumer's ``max_hold``). Settling twice is harmless: the second call
does nothing. A nack may say why (``error=``): the cluster keeps it as the
job's ``last_error`` (``Admin.get_job``, ``dpq job show``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from dpq.client._held import HoldState, JobRecord
from dpq.client._loop import LoopThread
from dpq.client._settle import Settler
from dpq.client.errors import job_ref_error
from dpq.client.spec import Delay, delay_ms

#: The most of a nack's error the cluster keeps, in bytes of UTF-8 (``NackRequest.error``).
MAX_ERROR_BYTES = 1024
_ELLIPSIS = "…"


def error_text(error: str | BaseException | None, limit: int = MAX_ERROR_BYTES) -> str:
    """A nack's error as sent: an exception as ``"Type: message"``, cut to at most
    ``limit`` bytes of UTF-8 at a character boundary (ending in "…" when cut)."""
    if error is None:
        return ""
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}"
    elif not isinstance(error, str):
        raise TypeError(f"error must be a str or an exception, not {type(error).__name__}")
    # Lone surrogates (undecodable file names) cannot travel as protobuf strings.
    data = error.encode("utf-8", "replace")
    if len(data) <= limit:
        return data.decode("utf-8")
    room = max(0, limit - len(_ELLIPSIS.encode()))
    # Cutting mid-character leaves a partial sequence at the end only: drop it.
    return data[:room].decode("utf-8", "ignore") + _ELLIPSIS


def _utc(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, tz=UTC)


class BaseJob:
    """What every job shows, sync or async."""

    __slots__ = ("_record",)

    def __init__(self, record: JobRecord) -> None:
        self._record = record

    @property
    def id(self) -> int:
        """The job id (assigned by the cluster, increasing in enqueue order)."""
        return self._record.pb.job_id

    @property
    def payload(self) -> bytes:
        """The payload, as enqueued."""
        return self._record.pb.payload

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self._record.pb.payload.decode("utf-8")

    @property
    def priority(self) -> int:
        """1 (most urgent) … 5."""
        return self._record.pb.priority

    @property
    def queue(self) -> str:
        """The queue's name."""
        return self._record.pb.queue

    @property
    def attempt(self) -> int:
        """1 on the first delivery, one more on each redelivery."""
        return self._record.pb.attempt

    @property
    def created_at(self) -> datetime:
        """When the cluster took the job (UTC)."""
        return _utc(self._record.pb.created_at_us)

    @property
    def lease_expires_at(self) -> datetime:
        """When the lease ends unless extended (UTC; after an extension, an estimate)."""
        return _utc(self._record.lease_expires_at_us)

    @property
    def address(self) -> str:
        """The node the job was leased from."""
        return self._record.address

    @property
    def settled(self) -> bool:
        """Whether the job was acked or nacked."""
        return self._record.state is HoldState.SETTLED

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} id={self.id} queue={self.queue!r} "
                f"priority={self.priority} attempt={self.attempt} payload={len(self.payload)}B>")


class AsyncJob(BaseJob):
    """A job held by an :class:`~dpq.client.AsyncConsumer`."""

    __slots__ = ("_settler",)

    def __init__(self, record: JobRecord, settler: Settler) -> None:
        super().__init__(record)
        self._settler = settler

    async def ack(self) -> None:
        """The job is done: remove it. Raises :class:`~dpq.client.LeaseLostError`
        if the job was handed to someone else meanwhile."""
        await self._settler.ack(self._record)

    async def nack(self, delay: Delay = 0, *, error: str | BaseException | None = None) -> None:
        """Give the job back: ready again after ``delay`` (seconds or a ``timedelta``).

        Its next delivery counts as a new attempt; after the cluster's
        ``max_attempts`` the job goes to the dead state instead. ``error``: why
        (text, or an exception: ``"Type: message"``), kept as the job's
        ``last_error``; cut to :data:`MAX_ERROR_BYTES` bytes of UTF-8.
        """
        await self._settler.nack(self._record, delay_ms(delay), error_text(error))

    async def extend(self, seconds: Delay) -> None:
        """Make the lease end ``seconds`` from now (the background extension still runs)."""
        ms = delay_ms(seconds)
        [error] = await self._settler.extend([self._record], max(1, ms))
        if error:
            self._record.state = HoldState.LOST
            raise job_ref_error(self.id, self.attempt, error, "extend")


class Job(BaseJob):
    """A job held by a :class:`~dpq.client.Consumer`; its methods block."""

    __slots__ = ("_async", "_loop")

    def __init__(self, job: AsyncJob, loop: LoopThread) -> None:
        super().__init__(job._record)
        self._async = job
        self._loop = loop

    def ack(self) -> None:
        """The job is done: remove it (see :meth:`AsyncJob.ack`)."""
        self._loop.run(self._async.ack())

    def nack(self, delay: Delay = 0, *, error: str | BaseException | None = None) -> None:
        """Give the job back, ready again after ``delay``, saying why in ``error`` (see
        :meth:`AsyncJob.nack`)."""
        self._loop.run(self._async.nack(delay, error=error))

    def extend(self, seconds: Delay) -> None:
        """Make the lease end ``seconds`` from now (see :meth:`AsyncJob.extend`)."""
        self._loop.run(self._async.extend(seconds))
