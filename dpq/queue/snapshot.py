"""The queue state machine as bytes, for Paxos snapshots.

A snapshot lets a node restart without replaying the whole log, lets the log be
compacted, and brings a far-behind follower up to date. Layout::

    b"DPQS" | u16 version | u32 meta length | meta (JSON) |
    u32 sessions length | sessions | u64 job count | jobs…

Each job is a fixed-size header (``_JOB``) followed by its consumer id and its
payload; payload bytes are copied, never re-encoded. The results remembered
for retried proposals are not included: a retry reaching a replica restored
from a snapshot is still applied at most once (the sessions are included), but
it is answered without the original job ids.
"""

from __future__ import annotations

import struct

import orjson

from dpq.paxos.sessions import Sessions
from dpq.queue.state import Job, JobState, QueueState

MAGIC = b"DPQS"
VERSION = 1
_HEAD = struct.Struct("<4sHI")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# job_id, queue index, priority, created, ready_at, lease_expires, owner, attempt,
# state, consumer id length, payload length
_JOB = struct.Struct("<QIbqqqIIBII")


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
                 len(job.payload))
        )
        parts.append(consumer)
        parts.append(job.payload)
    return b"".join(parts)


def validate(data: bytes) -> None:
    """Raise :class:`SnapshotError` (a ValueError) unless ``data`` loads.

    Loads it into a scratch state, so it costs what installing it costs; used on a
    snapshot from a peer before anything saves it.
    """
    try:
        load(data, QueueState())
    except Exception as exc:  # noqa: BLE001 - struct, JSON, UTF-8, keys...: not loadable
        raise SnapshotError(f"not a loadable snapshot ({len(data)} bytes): {exc}") from None


def load(data: bytes, state: QueueState | None = None) -> QueueState:
    """A state machine holding what ``dump`` wrote (observers are not told)."""
    view = memoryview(data)
    if len(view) < _HEAD.size:
        raise SnapshotError(f"{len(view)} bytes is too short for a snapshot header")
    magic, version, meta_len = _HEAD.unpack_from(view)
    if magic != MAGIC or version != VERSION:
        raise SnapshotError(f"not a version-{VERSION} dpq snapshot (magic {magic!r}, version {version})")
    at = _HEAD.size
    meta = orjson.loads(view[at : at + meta_len])
    at += meta_len
    (sessions_len,) = _U32.unpack_from(view, at)
    at += _U32.size
    state = state or QueueState()
    state.sessions = Sessions.from_bytes(bytes(view[at : at + sessions_len]))
    at += sessions_len
    state.next_job_id = meta["next_job_id"]
    state.clock_us = meta["clock_us"]
    state.applied_slot = meta["applied_slot"]
    state.written_slot = meta["written_slot"]
    for q, k, job_id, exp in meta["dedup"]:
        state.restore_dedup(q, k, job_id, exp)
    state.restore_touched(meta["touched"])
    queues = meta["queues"]
    (count,) = _U64.unpack_from(view, at)
    at += _U64.size
    unpack, size = _JOB.unpack_from, _JOB.size
    for _ in range(count):
        (job_id, qi, priority, created, ready_at, lease_expires, owner, attempt, job_state,
         consumer_len, payload_len) = unpack(view, at)
        at += size
        consumer = bytes(view[at : at + consumer_len]).decode()
        at += consumer_len
        payload = bytes(view[at : at + payload_len])
        at += payload_len
        state.restore_job(
            Job(job_id, queues[qi], priority, payload, created, ready_at, owner, attempt,
                JobState(job_state), lease_expires, consumer)
        )
    if at != len(view):
        raise SnapshotError(f"{len(view) - at} bytes left over after {count} jobs")
    return state
