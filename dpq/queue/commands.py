"""How a batch of queue commands rides in one Paxos slot.

A proposer (a gateway or a node) serialises a ``dpq.v1.CommandBatch`` once.
The leader prefixes it with its clock — 8 bytes, little-endian microseconds —
and proposes the result; nobody re-encodes the payloads on the way. Every
replica reads the stamp back with :func:`unstamp` and never reads a clock of
its own while applying.
"""

from __future__ import annotations

import struct

from dpq.v1 import log_pb2

_STAMP = struct.Struct("<q")
STAMP_SIZE = _STAMP.size


def stamp(leader_time_us: int, batch: bytes) -> bytes:
    """The proposal data for ``batch`` (serialised CommandBatch) at leader time."""
    return _STAMP.pack(leader_time_us) + batch


def unstamp(data: bytes) -> tuple[int, log_pb2.CommandBatch]:
    """The leader's time and the commands of one proposal."""
    if len(data) < STAMP_SIZE:
        raise ValueError(
            f"proposal of {len(data)} bytes is shorter than its {STAMP_SIZE}-byte stamp")
    (leader_time_us,) = _STAMP.unpack_from(data)
    batch = log_pb2.CommandBatch()
    batch.ParseFromString(memoryview(data)[STAMP_SIZE:])
    return leader_time_us, batch


def batch_of(*commands: log_pb2.Command) -> bytes:
    """Serialise commands into one batch (for proposers and tests)."""
    return log_pb2.CommandBatch(commands=commands).SerializeToString()
