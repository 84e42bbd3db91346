"""The queue state machine as bytes, for Paxos snapshots.

A snapshot lets a node restart without replaying the whole log, lets the log be
compacted, and brings a far-behind follower up to date. Layout::

    b"DPQS" | u16 version | u32 meta length | meta (JSON) |
    u32 sessions length | sessions | u64 job count | jobs…

Each job is a fixed-size header (``_JOB``) followed by its consumer id and its
payload; payload bytes are copied, never re-encoded. Version 2 added the lease
receipt; version 1 snapshots still load (their leases have receipt 0).

``load`` raises :class:`SnapshotError`, and nothing else, for bytes that are
not a snapshot, so a caller can check a snapshot before it keeps it. The results remembered
for retried proposals are not included: a retry reaching a replica restored
from a snapshot is still applied at most once (the sessions are included), but
it is answered without the original job ids.
"""

from __future__ import annotations

import struct

import orjson

from dpq.heap import PRIORITY_MAX, PRIORITY_MIN
from dpq.paxos.sessions import Sessions
from dpq.queue.state import Job, JobState, QueueState

MAGIC = b"DPQS"
VERSION = 2
_HEAD = struct.Struct("<4sHI")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# job_id, queue index, priority, created, ready_at, lease_expires, owner, attempt,
# state, consumer id length, payload length, receipt
_JOB = struct.Struct("<QIbqqqIIBIIQ")
_JOB_V1 = struct.Struct("<QIbqqqIIBII")


class SnapshotError(ValueError):
    """The bytes are not a snapshot this version can read."""


def dump(state: QueueState) -> bytes:
    queues = sorted({job.queue for job in state.jobs.values()})
    index = {name: i for i, name in enumerate(queues)}
    meta = orjson.dumps(
        {
            "next_job_id": state.next_job_id,
            "clock_us": state.clock_us,
            "applied_slot": state.applied_slot,
            "written_slot": state.written_slot,
            "queues": queues,
            "dedup": [[q, k, job_id, exp] for (q, k), (job_id, exp) in sorted(state.dedup.items())],
            "touched": state.touched_items(),
        }
    )
    sessions = state.sessions.to_bytes()
    parts = [_HEAD.pack(MAGIC, VERSION, len(meta)), meta, _U32.pack(len(sessions)), sessions,
             _U64.pack(len(state.jobs))]
    pack = _JOB.pack
    for job_id in sorted(state.jobs):
        job = state.jobs[job_id]
        consumer = job.consumer_id.encode()
        parts.append(
            pack(job.job_id, index[job.queue], job.priority, job.created_at_us, job.ready_at_us,
                 job.lease_expires_at_us, job.owner, job.attempt, job.state, len(consumer),
                 len(job.payload), job.receipt)
        )
        parts.append(consumer)
        parts.append(job.payload)
    return b"".join(parts)


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
    if magic != MAGIC or version not in (1, VERSION):
        raise SnapshotError(f"not a version-{VERSION} dpq snapshot (magic {magic!r}, version {version})")
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
    for q, k, job_id, exp in meta["dedup"]:
        state.restore_dedup(str(q), str(k), _count(job_id), _count(exp))
    state.restore_touched((_count(j), _count(s)) for j, s in meta["touched"])
    queues = [str(q) for q in meta["queues"]]
    (count,) = _U64.unpack_from(view, at)
    at += _U64.size
    job_struct = _JOB if version == VERSION else _JOB_V1
    unpack, size = job_struct.unpack_from, job_struct.size
    for _ in range(count):
        (job_id, qi, priority, created, ready_at, lease_expires, owner, attempt, job_state,
         consumer_len, payload_len, *receipt) = unpack(view, at)
        at += size
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX or job_state == JobState.GONE:
            raise SnapshotError(f"job {job_id}: priority {priority}, state {job_state}")
        if at + consumer_len + payload_len > len(view):
            raise SnapshotError(f"job {job_id} runs past the end of the snapshot")
        consumer = bytes(view[at : at + consumer_len]).decode()
        at += consumer_len
        payload = bytes(view[at : at + payload_len])
        at += payload_len
        state.restore_job(
            Job(job_id, queues[qi], priority, payload, created, ready_at, owner, attempt,
                JobState(job_state), lease_expires, consumer, receipt[0] if receipt else 0)
        )
    if at != len(view):
        raise SnapshotError(f"{len(view) - at} bytes left over after {count} jobs")
    return state


def _count(value) -> int:
    """A non-negative integer from the JSON part (a replica must be able to dump it again)."""
    if type(value) is not int or not 0 <= value < 2**63:
        raise SnapshotError(f"{value!r} is not a count")
    return value
