"""The queue state machine as bytes, for Paxos snapshots.

A snapshot lets a node restart without replaying the whole log, lets the log be
compacted, and brings a far-behind follower up to date. Layout (version 5)::

    b"DPQS" | u16 version | u32 meta length | meta (JSON) |
    u32 sessions length | sessions |
    u64 dedup count | dedup rows… | u64 touched count | touched rows… |
    u64 job count | jobs…

A dedup row is ``_DEDUP`` (job id, expiry, name lengths) then the queue name and
the key; a touched row is ``_TOUCHED`` (job id, slot). Each job is a fixed-size
header (``_JOB``) followed by its consumer id, its payload, its dedup key, its
last error and its fairness key; payload bytes are copied, never re-encoded. The
paused queues, the queues' settings (with their token buckets) and the schedules
(``dpq.queue.schedules``) are in the JSON part. Version 4 had no fairness keys,
settings or schedules; version 3 had no dedup key, last error, cancel flag or pauses;
version 2 kept the dedup keys and the touched jobs in the JSON part; version 1
had no lease receipts. All still load.

A snapshot of a big state takes long to write (about 1 µs a job), so
:class:`Dump` writes it a piece at a time: the caller runs :meth:`Dump.step`
between commands, and the state keeps the original of every job a command
changes meanwhile (:meth:`QueueState.freeze`), so the snapshot is the state
exactly as it was at the slot the dump began.

``load`` raises :class:`SnapshotError`, and nothing else, for bytes that are
not a snapshot, so a caller can check a snapshot before it keeps it. The results remembered
for retried proposals are not included: a retry reaching a replica restored
from a snapshot is still applied at most once (the sessions are included), but
it is answered without the original job ids.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator

import orjson

from dpq.paxos.sessions import Sessions
from dpq.queue.limits import QueueSettings
from dpq.queue.rules import PRIORITY_MAX, PRIORITY_MIN
from dpq.queue.state import Job, JobState, QueueState

MAGIC = b"DPQS"
VERSION = 5
_HEAD = struct.Struct("<4sHI")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# job_id, queue index, priority, created, ready_at, lease_expires, owner, attempt,
# state, consumer id length, payload length, receipt, dedup key length, last error
# length, flags (_CANCEL_REQUESTED), fairness key length
_JOB = struct.Struct("<QIbqqqIIBIIQIIBI")
_JOB_V4 = struct.Struct("<QIbqqqIIBIIQIIB")
_JOB_V3 = struct.Struct("<QIbqqqIIBIIQ")
_JOB_V1 = struct.Struct("<QIbqqqIIBII")
_CANCEL_REQUESTED = 1
# job_id, expires_at_us, queue name length, key length
_DEDUP = struct.Struct("<QqII")
# job_id, slot
_TOUCHED = struct.Struct("<Qq")


class SnapshotError(ValueError):
    """The bytes are not a snapshot this version can read."""


class Dump:
    """A snapshot of ``state`` written a piece at a time, between commands.

    Creating it freezes the state (every job it changes from then on is kept as
    it was) and captures the small parts at once; :meth:`step` writes the next
    ``budget`` rows; :meth:`close` thaws the state. The bytes are ``chunks``,
    joined by the caller (a join of big chunks can run outside the event loop).
    If the state is reset meanwhile (a snapshot from the leader was installed),
    the dump is :attr:`abandoned` and its chunks are meaningless.
    """

    def __init__(self, state: QueueState) -> None:
        self._state = state
        self._jobs = state.jobs
        self._frozen = state.freeze()
        #: The last slot the snapshot covers.
        self.slot = state.applied_slot
        self.chunks: list[bytes] = []
        self.abandoned = False
        self._closed = False
        job_ids = list(state.jobs)
        #: How many jobs the snapshot holds.
        self.jobs = len(job_ids)
        queues = list(state.counts)  # every queue holding a job has its counters
        self._queue_index = {name: i for i, name in enumerate(queues)}
        dedup = dict(state.dedup)  # a copy: pruning goes on meanwhile
        touched = state.touched_items()
        meta = orjson.dumps({
            "next_job_id": state.next_job_id,
            "clock_us": state.clock_us,
            "applied_slot": state.applied_slot,
            "written_slot": state.written_slot,
            "queues": queues,
            "paused": sorted(state.paused.items()),
            "configs": sorted((q, c.to_json()) for q, c in state.configs.items()),
            "config_slot": state.config_slot,
            "schedules": state.schedules.to_json(),
            "schedule_slot": state.schedules.defined_slot,  # periodic jobs; absent before issue 16
        })
        sessions = state.sessions.to_bytes()
        self.chunks.append(b"".join((_HEAD.pack(MAGIC, VERSION, len(meta)), meta,
                                     _U32.pack(len(sessions)), sessions,
                                     _U64.pack(len(dedup)))))
        self._rows: Iterator[bytes] = self._all_rows(dedup, touched, job_ids)

    def _all_rows(self, dedup: dict, touched: list, job_ids: list[int]) -> Iterator[bytes]:
        pack_dedup = _DEDUP.pack
        for (queue, key), (job_id, expires) in dedup.items():
            q, k = queue.encode(), key.encode()
            yield pack_dedup(job_id, expires, len(q), len(k)) + q + k
        yield _U64.pack(len(touched))
        pack_touched = _TOUCHED.pack
        for job_id, slot in touched:
            yield pack_touched(job_id, slot)
        yield _U64.pack(len(job_ids))
        jobs, frozen, index, pack = self._jobs, self._frozen, self._queue_index, _JOB.pack
        for job_id in job_ids:
            job = frozen.get(job_id) or jobs[job_id]
            consumer = job.consumer_id.encode()
            dedup_key = job.dedup_key.encode()
            last_error = job.last_error.encode()
            fairness_key = job.fairness_key.encode()
            yield pack(job.job_id, index[job.queue], job.priority, job.created_at_us,
                       job.ready_at_us, job.lease_expires_at_us, job.owner, job.attempt,
                       job.state, len(consumer), len(job.payload), job.receipt,
                       len(dedup_key), len(last_error),
                       _CANCEL_REQUESTED if job.cancel_requested else 0, len(fairness_key))
            yield consumer
            if dedup_key or last_error or fairness_key:
                yield job.payload + dedup_key + last_error + fairness_key
            else:
                yield job.payload

    def step(self, budget: int) -> bool:
        """Write about ``budget`` more rows; True once the snapshot is complete."""
        if self._closed:
            raise RuntimeError("the dump is closed")
        if self._state.jobs is not self._jobs:  # reset under us: this state is gone
            self.abandoned = True
            self.close()
            return True
        rows, parts = self._rows, []
        append = parts.append
        for _ in range(budget * 3):  # a job is three parts
            row = next(rows, None)
            if row is None:
                self.chunks.append(b"".join(parts))
                self.close()
                return True
            append(row)
        self.chunks.append(b"".join(parts))
        return False

    def close(self) -> None:
        """Thaw the state (idempotent); call it whether or not the dump finished."""
        if not self._closed:
            self._closed = True
            if self._state.jobs is self._jobs:
                self._state.thaw()


def dump(state: QueueState) -> bytes:
    """The whole snapshot at once (the state does not change meanwhile)."""
    d = Dump(state)
    try:
        while not d.step(65_536):
            pass
    finally:
        d.close()
    return b"".join(d.chunks)


def validate(data: bytes) -> QueueState:
    """Raise :class:`SnapshotError` (a ValueError) unless ``data`` loads.

    Loads it into a scratch state and returns it, so a snapshot from a peer is
    checked before anything saves it and, once installed, need not be loaded again
    (:meth:`QueueState.adopt`).
    """
    return load(data)


def load(data: bytes, state: QueueState | None = None, *,
         members: frozenset[int] = frozenset()) -> QueueState:
    """A state machine holding what ``dump`` wrote (observers are not told).

    Into ``state`` (reset first by the caller) or a new one with ``members``.
    """
    state = state if state is not None else QueueState(members=members)
    try:
        return _load(memoryview(data), state)
    except SnapshotError:
        raise
    except Exception as exc:  # junk of any shape is one kind of error
        raise SnapshotError(f"corrupt snapshot: {type(exc).__name__}: {exc}") from exc


def _load(view: memoryview, state: QueueState) -> QueueState:
    if len(view) < _HEAD.size:
        raise SnapshotError(f"{len(view)} bytes is too short for a snapshot header")
    magic, version, meta_len = _HEAD.unpack_from(view)
    if magic != MAGIC or version not in (1, 2, 3, 4, VERSION):
        raise SnapshotError(f"not a version 1-{VERSION} dpq snapshot (magic {magic!r}, "
                            f"version {version})")
    at = _HEAD.size
    meta = orjson.loads(view[at : at + meta_len])
    at += meta_len
    (sessions_len,) = _U32.unpack_from(view, at)
    at += _U32.size
    state.sessions = Sessions.from_bytes(bytes(view[at : at + sessions_len]))
    at += sessions_len
    state.next_job_id = _count(meta["next_job_id"])
    state.clock_us = _count(meta["clock_us"])
    state.applied_slot = _count(meta["applied_slot"])
    state.written_slot = _count(meta["written_slot"])
    if version < 3:
        for q, k, job_id, exp in meta["dedup"]:
            state.restore_dedup(str(q), str(k), _count(job_id), _count(exp))
        state.restore_touched((_count(j), _count(s)) for j, s in meta["touched"])
    else:
        at = _load_dedup(view, at, state)
        at = _load_touched(view, at, state)
    queues = [str(q) for q in meta["queues"]]
    for queue, until in meta.get("paused", ()):
        state.paused[str(queue)] = _count(until)
    try:
        for queue, config in meta.get("configs", ()):
            state.restore_config(str(queue), QueueSettings.from_json(config))
        state.config_slot = _count(meta.get("config_slot", 0))
    except (ValueError, TypeError, KeyError) as exc:
        raise SnapshotError(f"queue settings: {exc}") from exc
    state.restore_schedules(meta.get("schedules", ()))
    state.schedules.defined_slot = _count(meta.get("schedule_slot", 0))
    (count,) = _U64.unpack_from(view, at)
    at += _U64.size
    job_struct = {1: _JOB_V1, 2: _JOB_V3, 3: _JOB_V3, 4: _JOB_V4}.get(version, _JOB)
    unpack, size = job_struct.unpack_from, job_struct.size
    for _ in range(count):
        (job_id, qi, priority, created, ready_at, lease_expires, owner, attempt, job_state,
         consumer_len, payload_len, *rest) = unpack(view, at)
        at += size
        receipt, dedup_len, error_len, flags, fairness_len = (*rest, 0, 0, 0, 0, 0)[:5]
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX or job_state == JobState.GONE:
            raise SnapshotError(f"job {job_id}: priority {priority}, state {job_state}")
        if at + consumer_len + payload_len + dedup_len + error_len + fairness_len > len(view):
            raise SnapshotError(f"job {job_id} runs past the end of the snapshot")
        consumer = bytes(view[at : at + consumer_len]).decode()
        at += consumer_len
        payload = bytes(view[at : at + payload_len])
        at += payload_len
        dedup_key = bytes(view[at : at + dedup_len]).decode()
        at += dedup_len
        last_error = bytes(view[at : at + error_len]).decode()
        at += error_len
        fairness_key = sys.intern(bytes(view[at : at + fairness_len]).decode())
        at += fairness_len
        state.restore_job(
            Job(job_id, queues[qi], priority, payload, created, ready_at, owner, attempt,
                JobState(job_state), lease_expires, consumer, receipt, dedup_key, last_error,
                bool(flags & _CANCEL_REQUESTED), fairness_key)
        )
    if at != len(view):
        raise SnapshotError(f"{len(view) - at} bytes left over after {count} jobs")
    return state


def _load_dedup(view: memoryview, at: int, state: QueueState) -> int:
    (count,) = _U64.unpack_from(view, at)
    at += _U64.size
    unpack, size = _DEDUP.unpack_from, _DEDUP.size
    for _ in range(count):
        job_id, expires, queue_len, key_len = unpack(view, at)
        at += size
        if at + queue_len + key_len > len(view):
            raise SnapshotError(f"dedup key of job {job_id} runs past the end of the snapshot")
        queue = bytes(view[at : at + queue_len]).decode()
        at += queue_len
        key = bytes(view[at : at + key_len]).decode()
        at += key_len
        state.restore_dedup(queue, key, job_id, _count(expires))
    return at


def _load_touched(view: memoryview, at: int, state: QueueState) -> int:
    (count,) = _U64.unpack_from(view, at)
    at += _U64.size
    if at + count * _TOUCHED.size > len(view):
        raise SnapshotError(f"{count} touched jobs run past the end of the snapshot")
    rows = _TOUCHED.iter_unpack(view[at : at + count * _TOUCHED.size])
    state.restore_touched((job_id, _count(slot)) for job_id, slot in rows)
    return at + count * _TOUCHED.size


def _count(value) -> int:
    """A non-negative integer from the JSON part (a replica must be able to dump it again)."""
    if type(value) is not int or not 0 <= value < 2**63:
        raise SnapshotError(f"{value!r} is not a count")
    return value
