"""The bytes of the write-ahead log: record framing and the record codec.

Pure functions, no I/O: :mod:`dpq.paxos.wal` owns the files.

A record on disk is a frame around a payload::

    u32 length | u32 crc32(payload) | payload            (little-endian)

    payload = u8 type | fields
      HARD_STATE  1   i64 promised.round | i64 promised.node | i64 commit
      ENTRY       2   i64 slot | i64 ballot.round | i64 ballot.node | i64 seq
                      | u32 len(client_id) | u32 len(data) | client_id (utf-8) | data
      SEAL        3   i64 segment seq        (the last record of a finished segment)

``crc32`` is :func:`zlib.crc32`. A payload is never empty (it has a type byte),
so a zero length is never written: a run of zero bytes, which is what many file
systems leave after a crash that extended a file but lost its data, has length
0 and ``crc32(b"") == 0`` and would otherwise pass the check.

The decoder separates two kinds of bad bytes, because the log treats them
differently (see :mod:`dpq.paxos.wal`):

* a *torn* frame (too short, a length that is zero or absurd, a CRC mismatch)
  is what an interrupted write looks like: :func:`scan` stops there and says
  why;
* a frame whose CRC matches but whose payload makes no sense (unknown type,
  lengths that do not add up, bad UTF-8) was written that way. No crash produces
  it, so it is a bug or a format this code does not know: :class:`BadRecord`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import NamedTuple

from dpq.paxos.types import Ballot, Entry, HardState, Proposal

FRAME = struct.Struct("<II")  # length, crc32 of the payload
HARD_STATE = 1
ENTRY = 2
SEAL = 3
_HARD_STATE = struct.Struct("<Bqqq")  # type, promised.round, promised.node, commit
_ENTRY = struct.Struct("<BqqqqII")  # type, slot, round, node, seq, len(client_id), len(data)
_SEAL = struct.Struct("<Bq")  # type, segment seq

#: The largest payload the writer produces and the reader believes. A length
#: field above it is treated as torn: a random 32-bit value would otherwise send
#: the reader looking for up to 4 GiB of payload. Proposals are batches of jobs,
#: so 256 MiB is far above any sane one.
MAX_PAYLOAD = 256 << 20


class BadRecord(ValueError):
    """A frame whose checksum is right but whose payload cannot be decoded."""

    #: Where the frame starts in the buffer :func:`scan` was given.
    offset: int = -1


class Torn(NamedTuple):
    """Where and why :func:`scan` stopped before the end of the buffer."""

    offset: int
    reason: str


class Seal(NamedTuple):
    """Marks a segment as finished: nothing may follow it in that segment.

    Without it, a sealed segment that lost whole records from its end (cut at
    a record boundary) would look intact.
    """

    segment: int


Record = HardState | Entry | Seal


# ---------------------------------------------------------------- encoding


def encode_hard_state(hs: HardState) -> bytes:
    """One framed HARD_STATE record."""
    try:
        payload = _HARD_STATE.pack(HARD_STATE, hs.promised.round, hs.promised.node, hs.commit)
    except struct.error as exc:
        raise ValueError(f"cannot encode {hs!r}: {exc}") from None
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def encode_seal(segment: int) -> bytes:
    """One framed SEAL record for segment number ``segment``."""
    payload = _SEAL.pack(SEAL, segment)
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def encode_entries(entries: Iterable[Entry]) -> bytes:
    """The framed ENTRY records of ``entries``, concatenated.

    Each proposal's ``data`` is copied exactly once, into the returned buffer;
    the CRC is computed piecewise so no intermediate payload object is built.
    """
    parts: list[bytes] = []
    for e in entries:
        p = e.proposal
        cid = p.client_id.encode("utf-8")
        data = p.data
        try:
            head = _ENTRY.pack(
                ENTRY, e.slot, e.ballot.round, e.ballot.node, p.seq, len(cid), len(data)
            )
        except struct.error as exc:
            raise ValueError(f"cannot encode entry for slot {e.slot!r}: {exc}") from None
        length = len(head) + len(cid) + len(data)
        if length > MAX_PAYLOAD:
            raise ValueError(
                f"entry for slot {e.slot} is {length} bytes, over the {MAX_PAYLOAD}-byte limit"
            )
        crc = zlib.crc32(data, zlib.crc32(cid, zlib.crc32(head)))
        parts += (FRAME.pack(length, crc), head, cid, data)
    return b"".join(parts)


# ---------------------------------------------------------------- decoding


def decode_payload(payload: memoryview) -> Record:
    """The record in one payload whose CRC has already been checked."""
    if not payload:
        raise BadRecord("empty payload")
    kind = payload[0]
    if kind == HARD_STATE:
        if len(payload) != _HARD_STATE.size:
            raise BadRecord(f"hard-state payload of {len(payload)} bytes, not {_HARD_STATE.size}")
        _, rnd, node, commit = _HARD_STATE.unpack(payload)
        return HardState(Ballot(rnd, node), commit)
    if kind == ENTRY:
        if len(payload) < _ENTRY.size:
            raise BadRecord(f"entry payload of {len(payload)} bytes is shorter than its header")
        _, slot, rnd, node, seq, cid_len, data_len = _ENTRY.unpack_from(payload)
        if _ENTRY.size + cid_len + data_len != len(payload):
            raise BadRecord(
                f"entry lengths {cid_len}+{data_len} do not fit a {len(payload)}-byte payload"
            )
        at = _ENTRY.size + cid_len
        try:
            cid = str(payload[_ENTRY.size : at], "utf-8")
        except UnicodeDecodeError as exc:
            raise BadRecord(f"entry client_id is not UTF-8: {exc}") from None
        return Entry(slot, Ballot(rnd, node), Proposal(cid, seq, bytes(payload[at:])))
    if kind == SEAL:
        if len(payload) != _SEAL.size:
            raise BadRecord(f"seal payload of {len(payload)} bytes, expected {_SEAL.size}")
        return Seal(_SEAL.unpack(payload)[1])
    raise BadRecord(f"unknown record type {kind}")


def scan(buf: bytes, records: list[tuple[int, Record]]) -> Torn | None:
    """Decode the frames of ``buf`` into ``records`` as ``(offset, record)``.

    Returns ``None`` if ``buf`` ends exactly after a good frame, else where and
    why the first torn frame starts (nothing from there on is decoded). Raises
    :class:`BadRecord` (with ``.offset`` set) for an undecodable payload.
    """
    view = memoryview(buf)
    end = len(buf)
    off = 0
    while off < end:
        if end - off < FRAME.size:
            return Torn(off, f"{end - off} bytes left, a frame header needs {FRAME.size}")
        length, crc = FRAME.unpack_from(buf, off)
        if length == 0:
            return Torn(off, "zero length")
        if length > MAX_PAYLOAD or length > end - off - FRAME.size:
            return Torn(off, f"length {length} runs past the end of the file")
        start = off + FRAME.size
        payload = view[start : start + length]
        if zlib.crc32(payload) != crc:
            return Torn(off, "CRC mismatch")
        try:
            records.append((off, decode_payload(payload)))
        except BadRecord as exc:
            exc.offset = off
            raise
        off = start + length
    return None
