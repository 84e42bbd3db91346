"""A big snapshot travels in pieces; this puts them back together. No I/O.

Why: an ``InstallSnapshot`` of the whole queue state is tens of MB. Encoded as
one protobuf message it is copied several times on the sender's event loop and
parsed whole on the receiver's, each copy ~30 ms for 40 MB. So the sender
(``dpq.node.transport.PeerLink``) sends a snapshot bigger than
:data:`PIECE_BYTES` as consecutive ``InstallSnapshot`` messages, one per
``PeerBatch``, each with the same ballot, commit and slot, ``total`` = the whole
length and ``offset`` = where its ``data`` starts; nothing else to that peer goes
between them. The receiver feeds each piece to :meth:`Reassembler.add`, which
returns an :class:`Assembled` once the last one is in; its :meth:`~Assembled.join`
copies the parts into one ``bytes`` and should run in a thread (``bytes.join``
of large parts releases the GIL).

Rules, per sender (at most one unfinished snapshot each, so memory is bounded by
one snapshot per peer):

* a piece at offset 0 starts a snapshot, replacing any unfinished one (the
  sender started over: a new stream, a newer snapshot);
* any other piece continues it only if its slot, ballot and total match and its
  offset is the number of bytes received so far; else it is dropped
  (:class:`PieceDropped`), and the unfinished snapshot stays as it was.
"""

from __future__ import annotations

from typing import NamedTuple, NoReturn

from dpq.paxos import messages as m
from dpq.paxos.types import MAX_SNAPSHOT_BYTES, Ballot, Snapshot

#: The most snapshot bytes one piece carries. gRPC's own work per message on the
#: loop grows with its size (bench/snapshot_send.py, 40 MiB, sender and receiver on
#: one loop: worst stall ~4 ms with 256 KiB pieces, ~8-17 ms with 1 MiB, ~400 ms
#: whole), and the whole transfer takes about as long either way.
PIECE_BYTES = 256 << 10


class SnapshotPiece(NamedTuple):
    """One piece of an ``InstallSnapshot`` (``dpq.node.wire.decode(..., pieces=True)``)."""

    src: int
    dst: int
    ballot: Ballot
    commit: int
    slot: int
    offset: int
    total: int
    data: bytes


class Assembled(NamedTuple):
    """Every piece of one snapshot, in order; :meth:`join` makes the core's message."""

    src: int
    dst: int
    ballot: Ballot
    commit: int
    slot: int
    parts: tuple[bytes, ...]

    def join(self) -> m.InstallSnapshot:
        """The whole ``InstallSnapshot``. Copies every byte: call it off the event loop."""
        data = b"".join(self.parts)
        return m.InstallSnapshot(self.src, self.dst, self.ballot, Snapshot(self.slot, data),
                                 self.commit)


class PieceDropped(ValueError):
    """A piece that does not fit; the text says why (for the log)."""


class _Assembly:
    __slots__ = ("first", "parts", "received")

    def __init__(self, first: SnapshotPiece) -> None:
        self.first = first
        self.parts: list[bytes] = []
        self.received = 0


class Reassembler:
    """The unfinished snapshots, one per sender at most."""

    def __init__(self, max_bytes: int = MAX_SNAPSHOT_BYTES) -> None:
        self.max_bytes = max_bytes
        self._open: dict[int, _Assembly] = {}
        #: Pieces refused, and unfinished snapshots replaced by a new start.
        self.dropped = 0
        self.abandoned = 0

    def add(self, piece: SnapshotPiece) -> Assembled | None:
        """The whole snapshot if ``piece`` completes it, else None; :class:`PieceDropped`
        (the state unchanged) if it fits nowhere."""
        src, offset, total, size = piece.src, piece.offset, piece.total, len(piece.data)
        if not 0 < total <= self.max_bytes:
            self._drop(f"snapshot piece from node {src}: total {total} is outside "
                       f"1..{self.max_bytes}")
        if offset < 0 or offset + size > total:
            self._drop(f"snapshot piece from node {src}: offset {offset} + {size} bytes is "
                       f"over the total of {total}")
        current = self._open.get(src)
        if offset == 0:
            if current is not None:
                self.abandoned += 1
            current = self._open[src] = _Assembly(piece)
        elif current is None:
            self._drop(f"snapshot piece from node {src} at offset {offset}: no snapshot "
                       "from it is being received")
        else:
            first = current.first
            if (piece.slot, piece.ballot, total) != (first.slot, first.ballot, first.total):
                self._drop(f"snapshot piece from node {src} (slot {piece.slot}, ballot "
                           f"{piece.ballot}, total {total}) is not of the snapshot being received "
                           f"(slot {first.slot}, ballot {first.ballot}, total {first.total})")
            if offset != current.received:
                self._drop(f"snapshot piece from node {src} at offset {offset}: "
                           f"{current.received} bytes were received so far")
        if size:
            current.parts.append(piece.data)
            current.received += size
        if current.received < total:
            return None
        del self._open[src]
        first = current.first
        return Assembled(src, first.dst, first.ballot, first.commit, first.slot,
                         tuple(current.parts))

    def receiving(self, src: int) -> int | None:
        """Bytes received so far of the unfinished snapshot from ``src``, or None."""
        current = self._open.get(src)
        return None if current is None else current.received

    def _drop(self, why: str) -> NoReturn:
        self.dropped += 1
        raise PieceDropped(why)
