"""Reassembly of snapshots sent in pieces (dpq.node.snapshot_pieces): the rules, and the
class checked against a dumb model on arbitrary piece sequences (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpq.node import wire
from dpq.node.snapshot_pieces import Assembled, PieceDropped, Reassembler, SnapshotPiece
from dpq.paxos import messages as m
from dpq.paxos.types import MAX_SNAPSHOT_BYTES, Ballot, Snapshot

B = Ballot(3, 1)


def pieces(data: bytes, size: int, *, src: int = 1, slot: int = 7, ballot: Ballot = B,
           commit: int = 9) -> list[SnapshotPiece]:
    """An honest sender's pieces of ``data``."""
    return [SnapshotPiece(src, 2, ballot, commit, slot, off, len(data), data[off:off + size])
            for off in range(0, len(data), size)]


def feed(r: Reassembler, items) -> list[Assembled]:
    done = []
    for piece in items:
        out = r.add(piece)
        if out is not None:
            done.append(out)
    return done


def test_in_order_pieces_make_the_snapshot_and_join_gives_the_core_message():
    data = bytes(range(256)) * 10
    r = Reassembler()
    *head, last = pieces(data, 300)
    assert feed(r, head) == []
    assert r.receiving(1) == 300 * len(head)
    done = r.add(last)
    assert done is not None and r.receiving(1) is None
    assert done.join() == m.InstallSnapshot(1, 2, B, Snapshot(7, data), 9)
    assert r.dropped == 0


def test_a_single_piece_is_a_whole_snapshot():
    r = Reassembler()
    (done,) = feed(r, pieces(b"abc", 10))
    assert done.join().snapshot == Snapshot(7, b"abc")


@pytest.mark.parametrize("change, why", [
    ({"offset": 8}, "at offset 8: 4 bytes were received so far"),       # a gap (out of order)
    ({"offset": 0, "data": b"x"}, None),                                # restart: not a drop
    ({"slot": 8}, ("(slot 8, ballot 3.1, total 12) is not of the snapshot being received "
                   "(slot 7, ballot 3.1, total 12)")),
    ({"ballot": Ballot(4, 1)}, "ballot 4.1"),
    ({"total": 13}, "total 13"),
])
def test_a_piece_that_does_not_continue_is_dropped_and_the_assembly_is_kept(change, why):
    data = b"0123456789ab"
    first, second, third = pieces(data, 4)
    r = Reassembler()
    r.add(first)
    bad = second._replace(**change)
    if why is None:
        assert r.add(bad) is None and r.abandoned == 1 and r.receiving(1) == 1
        return
    with pytest.raises(PieceDropped, match=why.replace("(", r"\(").replace(")", r"\)")):
        r.add(bad)
    assert r.dropped == 1 and r.receiving(1) == 4
    # The right pieces still complete it.
    assert r.add(second) is None
    assert r.add(third).join().snapshot.data == data


def test_a_duplicate_piece_is_dropped():
    data = b"0123456789ab"
    first, second, third = pieces(data, 4)
    r = Reassembler()
    r.add(first)
    r.add(second)
    with pytest.raises(PieceDropped, match="at offset 4: 8 bytes were received so far"):
        r.add(second)
    assert r.add(third).join().snapshot.data == data


def test_a_piece_with_nothing_started_is_dropped():
    r = Reassembler()
    with pytest.raises(PieceDropped, match="at offset 4: no snapshot from it is being received"):
        r.add(pieces(b"0123456789ab", 4)[1])
    # After completion, a late piece of the finished snapshot is dropped the same way.
    feed(r, pieces(b"0123", 2))
    with pytest.raises(PieceDropped, match="no snapshot"):
        r.add(pieces(b"0123", 2)[1])
    assert r.dropped == 2


def test_an_oversize_or_inconsistent_total_is_dropped_before_any_memory_is_kept():
    r = Reassembler(max_bytes=100)
    with pytest.raises(PieceDropped, match="total 101 is outside 1..100"):
        r.add(SnapshotPiece(1, 2, B, 0, 7, 0, 101, b"x"))
    with pytest.raises(PieceDropped, match="total 0 is outside"):
        r.add(SnapshotPiece(1, 2, B, 0, 7, 0, 0, b""))
    with pytest.raises(PieceDropped, match="offset 0 \\+ 5 bytes is over the total of 4"):
        r.add(SnapshotPiece(1, 2, B, 0, 7, 0, 4, b"12345"))
    assert r.receiving(1) is None and r.dropped == 3
    assert Reassembler().max_bytes == MAX_SNAPSHOT_BYTES


def test_a_restart_at_offset_0_replaces_the_unfinished_snapshot():
    r = Reassembler()
    old = pieces(b"a" * 12, 4, slot=5)
    new = pieces(b"b" * 8, 4, slot=6, ballot=Ballot(4, 1))
    assert feed(r, old[:2] + new[:1]) == []
    assert r.abandoned == 1
    with pytest.raises(PieceDropped):
        r.add(old[2])  # the old snapshot's last piece no longer fits
    (done,) = feed(r, new[1:])
    assert done.join().snapshot == Snapshot(6, b"b" * 8)


def test_pieces_from_two_senders_interleaved_make_both():
    r = Reassembler()
    a = pieces(b"A" * 10, 3, src=1)
    b = pieces(b"B" * 7, 2, src=3)
    mixed = [p for pair in zip(a, b, strict=False) for p in pair] + a[len(b):] + b[len(a):]
    done = feed(r, mixed)
    assert {(d.src, d.join().snapshot.data) for d in done} == {(1, b"A" * 10), (3, b"B" * 7)}


def test_the_wire_pieces_an_honest_sender_makes_reassemble():
    data = bytes(range(256)) * 41  # 10,496 bytes: 10 pieces of 1,024 and a short one
    message = m.InstallSnapshot(1, 2, B, Snapshot(7, data), 9)
    batches = list(wire.encode_pieces(message, 1024))
    assert len(batches) == 11 and all(len(b.messages) == 1 for b in batches)
    r = Reassembler()
    decoded = [wire.decode(b.messages[0], pieces=True) for b in batches]
    (done,) = feed(r, decoded)
    assert done.join() == message


# --------------------------------------------------------------------------- against a model


class Model:
    """The rules of the module docstring, as plainly as they can be written."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.open: dict[int, tuple[tuple, bytes, SnapshotPiece]] = {}

    def add(self, p: SnapshotPiece):
        if p.total < 1 or p.total > self.max_bytes or p.offset + len(p.data) > p.total:
            return "dropped"
        key = (p.slot, p.ballot, p.total)
        if p.offset == 0:
            self.open[p.src] = (key, p.data, p)
        elif p.src not in self.open:
            return "dropped"
        else:
            have_key, have, first = self.open[p.src]
            if have_key != key or len(have) != p.offset:
                return "dropped"
            self.open[p.src] = (key, have + p.data, first)
        key, have, first = self.open[p.src]
        if len(have) == p.total:
            del self.open[p.src]
            return m.InstallSnapshot(p.src, first.dst, first.ballot, Snapshot(first.slot, have),
                                     first.commit)
        return None


small_pieces = st.builds(
    SnapshotPiece, st.sampled_from([1, 3]), st.just(2), st.sampled_from([B, Ballot(4, 1)]),
    st.integers(0, 3), st.sampled_from([5, 6]), st.integers(0, 12), st.integers(0, 14),
    st.binary(max_size=6))


@st.composite
def piece_sequences(draw):
    """Honest pieces of a few snapshots from two senders, interleaved, with random
    pieces, duplicates and losses mixed in."""
    streams = []
    for src in (1, 3):
        for slot in draw(st.lists(st.sampled_from([5, 6]), max_size=2)):
            data = draw(st.binary(min_size=1, max_size=12))
            streams.append(pieces(data, draw(st.integers(1, 5)), src=src, slot=slot))
    out = []
    while any(streams):
        i = draw(st.sampled_from([i for i, s in enumerate(streams) if s]))
        piece = streams[i].pop(0)
        action = draw(st.sampled_from(["send"] * 6 + ["lose", "twice", "junk"]))
        if action != "lose":
            out.append(piece)
        if action == "twice":
            out.append(piece)
        if action == "junk":
            out.append(draw(small_pieces))
    return out


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(st.one_of(piece_sequences(), st.lists(small_pieces, max_size=30)))
def test_the_reassembler_does_what_the_model_does(sequence):
    r, model = Reassembler(max_bytes=10), Model(max_bytes=10)
    for piece in sequence:
        expected = model.add(piece)
        if expected == "dropped":
            before = r.dropped
            with pytest.raises(PieceDropped):
                r.add(piece)
            assert r.dropped == before + 1
            continue
        got = r.add(piece)
        assert (got.join() if got is not None else None) == expected
        assert r.receiving(piece.src) == (
            len(model.open[piece.src][1]) if piece.src in model.open else None)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 3]), st.binary(min_size=1, max_size=40),
                          st.integers(1, 9)), max_size=4), st.randoms(use_true_random=False))
def test_honest_interleaved_senders_always_get_through(snapshots, rnd):
    r = Reassembler()
    queues: dict[int, list[SnapshotPiece]] = {}
    for i, (src, data, size) in enumerate(snapshots):
        queues.setdefault(src, []).extend(pieces(data, size, src=src, slot=i))
    order = [src for src, q in queues.items() for _ in q]
    rnd.shuffle(order)  # each sender's pieces stay in order, the senders interleave
    done = feed(r, [queues[src].pop(0) for src in order])
    got = sorted((d.src, d.slot, d.join().snapshot.data) for d in done)
    assert got == sorted((src, i, data) for i, (src, data, _) in enumerate(snapshots))
    assert r.dropped == 0 and r.abandoned == 0
