"""Paxos messages ↔ ``dpq.v1`` protobuf, for the Replication stream.

The core's messages are plain NamedTuples (``dpq.paxos.messages``); this is
the only place that knows both shapes. Proposal data (a stamp and a serialised
CommandBatch) is carried as bytes and never parsed here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator

from dpq.node.snapshot_pieces import PIECE_BYTES, SnapshotPiece
from dpq.paxos import messages as m
from dpq.paxos.types import (
    MAX_CLIENT_ID_BYTES,
    MAX_ENTRIES_PER_MESSAGE,
    MAX_ITEMS_PER_BATCH,
    MAX_MESSAGES_PER_BATCH,
    MAX_NODE_ID,
    MAX_PROPOSAL_BYTES,
    MAX_PROPOSALS_PER_MESSAGE,
    MAX_ROUND,
    MAX_SEQ,
    MAX_SLOT,
    MAX_SNAPSHOT_BYTES,
    Ballot,
    Entry,
    Proposal,
    Snapshot,
    over_limit,
    proposal_problem,
)
from dpq.v1 import replication_pb2 as pb


class MalformedMessage(ValueError):
    """A peer message refused at the edge, before the core sees it.

    The text names the field, the value and the limit, e.g. ``prepare.ballot.round:
    9223372036854775808 is over the limit of 4611686018427387904``. ``src`` is the
    node id the message claims to come from (unauthenticated), ``kind`` its kind
    (``prepare``, ``accept``, …; ``batch`` for the batch itself).
    """

    def __init__(self, problem: str, *, src: int | None = None, kind: str = "batch") -> None:
        super().__init__(problem)
        self.src = src
        self.kind = kind


class _Bad(ValueError):
    """A problem found while decoding one message; decode() adds who and what."""


def _ballot(b: Ballot) -> pb.Ballot:
    return pb.Ballot(round=b.round, node=b.node)


def _from_ballot(b: pb.Ballot) -> Ballot:
    return Ballot(b.round, b.node)


def _proposal(p: Proposal) -> pb.PaxosProposal:
    return pb.PaxosProposal(client_id=p.client_id, seq=p.seq, data=p.data)


def _from_proposal(p: pb.PaxosProposal) -> Proposal:
    return Proposal(p.client_id, p.seq, p.data)


def _snapshot(s: Snapshot) -> pb.PaxosSnapshot:
    return pb.PaxosSnapshot(slot=s.slot, data=s.data)


def encode(message: m.Message) -> pb.PaxosMessage:
    out = pb.PaxosMessage(src=message.src, dst=message.dst)
    if isinstance(message, m.Accept):
        out.accept.SetInParent()
        accept = out.accept
        accept.ballot.CopyFrom(_ballot(message.ballot))
        accept.first_slot = message.first_slot
        accept.commit = message.commit
        accept.proposals.extend(_proposal(p) for p in message.proposals)
    elif isinstance(message, m.Accepted):
        out.accepted.CopyFrom(
            pb.Accepted(ballot=_ballot(message.ballot), match=message.match, last=message.last,
                        learner=message.learner, rejoin=message.rejoin)
        )
    elif isinstance(message, m.Prepare):
        out.prepare.CopyFrom(pb.Prepare(ballot=_ballot(message.ballot),
                                        from_slot=message.from_slot))
    elif isinstance(message, m.Promise):
        promise = pb.Promise(
            ballot=_ballot(message.ballot),
            commit=message.commit,
            entries=[
                pb.PaxosEntry(slot=e.slot, ballot=_ballot(e.ballot), proposal=_proposal(e.proposal))
                for e in message.entries
            ],
        )
        if message.snapshot is not None:
            promise.snapshot.CopyFrom(_snapshot(message.snapshot))
        out.promise.CopyFrom(promise)
    elif isinstance(message, m.InstallSnapshot):
        out.install_snapshot.CopyFrom(
            pb.InstallSnapshot(
                ballot=_ballot(message.ballot),
                snapshot=_snapshot(message.snapshot),
                commit=message.commit,
            )
        )
    elif isinstance(message, m.Commit):
        out.commit.CopyFrom(pb.Commit(ballot=_ballot(message.ballot), commit=message.commit))
    elif isinstance(message, m.Nack):
        out.nack.CopyFrom(pb.Nack(ballot=_ballot(message.ballot),
                                  rejected=_ballot(message.rejected)))
    else:
        raise TypeError(f"not a Paxos message: {message!r}")
    return out


def encode_pieces(message: m.InstallSnapshot,
                  piece_bytes: int = PIECE_BYTES) -> Iterator[pb.PeerBatch]:
    """``message`` as consecutive batches of one piece each (dpq.node.snapshot_pieces).

    Lazy: each piece is sliced and encoded only when asked for, so a sender that
    yields between pieces never holds its event loop for more than one. (upb takes
    no memoryview for a bytes field: each piece is one slice copy, then one copy
    into the message.)
    """
    data = message.snapshot.data
    total = len(data)
    ballot = _ballot(message.ballot)
    for offset in range(0, total, piece_bytes):
        batch = pb.PeerBatch()
        out = batch.messages.add(src=message.src, dst=message.dst)
        install = out.install_snapshot
        install.ballot.CopyFrom(ballot)
        install.commit = message.commit
        snapshot = install.snapshot
        snapshot.slot, snapshot.offset, snapshot.total = message.snapshot.slot, offset, total
        snapshot.data = data[offset:offset + piece_bytes]
        yield batch


def _limit(field: str, value: int, limit: int) -> None:
    problem = over_limit(field, value, limit)
    if problem is not None:
        raise _Bad(problem)


def _check_ballot(field: str, b: pb.Ballot) -> Ballot:
    _limit(f"{field}.round", b.round, MAX_ROUND)
    _limit(f"{field}.node", b.node, MAX_NODE_ID)
    return Ballot(b.round, b.node)


def _check_count(field: str, count: int, limit: int) -> None:
    if count > limit:
        raise _Bad(f"{field}: {count} items is over the limit of {limit}")


def _proposals(field: str, items, indexed: bool = True) -> tuple[Proposal, ...]:
    """The proposals of ``items``; the field path is built only for a bad one (hot path)."""
    out = []
    for p in items:
        client_id, seq, data = p.client_id, p.seq, p.data
        # Fast path: a short id (UTF-8: <= 4 bytes a character; protobuf strings are
        # valid UTF-8) needs no encoding to measure.
        if (seq > MAX_SEQ or len(data) > MAX_PROPOSAL_BYTES
                or len(client_id) * 4 > MAX_CLIENT_ID_BYTES):
            where = f"{field}[{len(out)}]." if indexed else f"{field}."
            problem = proposal_problem(client_id, seq, len(data), where)
            if problem is not None:
                raise _Bad(problem)
        out.append(Proposal(client_id, seq, data))
    return tuple(out)


def _check_snapshot(field: str, s: pb.PaxosSnapshot) -> Snapshot:
    """A whole snapshot (total 0); a piece is refused here."""
    _limit(f"{field}.slot", s.slot, MAX_SLOT)
    _limit(f"{field}.total", s.total, 0)
    _limit(f"{field}.offset", s.offset, 0)
    data = s.data  # upb copies on every read
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise _Bad(f"{field}.data: {len(data)} bytes is over the limit of {MAX_SNAPSHOT_BYTES}")
    return Snapshot(s.slot, data)


def _piece(src: int, dst: int, s: pb.InstallSnapshot) -> SnapshotPiece:
    snap = s.snapshot
    total, offset = snap.total, snap.offset
    _limit("install_snapshot.snapshot.total", total, MAX_SNAPSHOT_BYTES)
    _limit("install_snapshot.snapshot.slot", snap.slot, MAX_SLOT)
    data = snap.data
    if offset + len(data) > total:
        raise _Bad(f"install_snapshot.snapshot.offset: {offset} + {len(data)} bytes of data is "
                   f"over the total of {total}")
    return SnapshotPiece(src, dst, _check_ballot("install_snapshot.ballot", s.ballot), s.commit,
                         snap.slot, offset, total, data)


def _decode(kind: str, src: int, dst: int, message: pb.PaxosMessage,
            pieces: bool = False) -> m.Message | SnapshotPiece:
    if kind == "accept":
        a = message.accept
        count = len(a.proposals)
        _check_count("accept.proposals", count, MAX_PROPOSALS_PER_MESSAGE)
        first = a.first_slot
        _limit("accept.first_slot", first, MAX_SLOT)
        if count and (first == 0 or first + count - 1 > MAX_SLOT):
            raise _Bad(f"accept.first_slot: {first} with {count} proposals is outside slots "
                       f"1..{MAX_SLOT}")
        _limit("accept.commit", a.commit, MAX_SLOT)
        proposals = _proposals("accept.proposals", a.proposals)
        return m.Accept(src, dst, _check_ballot("accept.ballot", a.ballot), first, proposals,
                        a.commit)
    if kind == "accepted":
        a = message.accepted
        _limit("accepted.match", a.match, MAX_SLOT)
        _limit("accepted.last", a.last, MAX_SLOT)
        _limit("accepted.rejoin", a.rejoin, MAX_SEQ)
        return m.Accepted(src, dst, _check_ballot("accepted.ballot", a.ballot), a.match, a.last,
                          a.learner, a.rejoin)
    if kind == "prepare":
        p = message.prepare
        _limit("prepare.from_slot", p.from_slot, MAX_SLOT)
        return m.Prepare(src, dst, _check_ballot("prepare.ballot", p.ballot), p.from_slot)
    if kind == "promise":
        p = message.promise
        _check_count("promise.entries", len(p.entries), MAX_ENTRIES_PER_MESSAGE)
        _limit("promise.commit", p.commit, MAX_SLOT)
        entries = []
        for i, e in enumerate(p.entries):
            field = f"promise.entries[{i}]"
            _limit(f"{field}.slot", e.slot, MAX_SLOT)
            (proposal,) = _proposals(f"{field}.proposal", (e.proposal,), indexed=False)
            entries.append(Entry(e.slot, _check_ballot(f"{field}.ballot", e.ballot), proposal))
        snap = _check_snapshot("promise.snapshot", p.snapshot) if p.HasField("snapshot") else None
        return m.Promise(src, dst, _check_ballot("promise.ballot", p.ballot), p.commit,
                         tuple(entries), snap)
    if kind == "install_snapshot":
        s = message.install_snapshot
        _limit("install_snapshot.commit", s.commit, MAX_SLOT)
        if pieces and s.snapshot.total:
            return _piece(src, dst, s)
        return m.InstallSnapshot(src, dst, _check_ballot("install_snapshot.ballot", s.ballot),
                                 _check_snapshot("install_snapshot.snapshot", s.snapshot),
                                 s.commit)
    if kind == "commit":
        c = message.commit
        _limit("commit.commit", c.commit, MAX_SLOT)
        return m.Commit(src, dst, _check_ballot("commit.ballot", c.ballot), c.commit)
    if kind == "nack":
        n = message.nack
        return m.Nack(src, dst, _check_ballot("nack.ballot", n.ballot),
                      _check_ballot("nack.rejected", n.rejected))
    raise _Bad(f"unknown kind {kind!r}")


def decode(message: pb.PaxosMessage, *, node_id: int | None = None,
           peers: Collection[int] | None = None,
           pieces: bool = False) -> m.Message | SnapshotPiece:
    """The core's message for ``message``, every number and count checked.

    Raises :class:`MalformedMessage` for anything out of range. With ``node_id``,
    also refuses a message not addressed to that node or claiming to come from
    it; with ``peers``, one whose ``src`` is not among them. A piece of a
    snapshot (``install_snapshot.snapshot.total`` > 0) is a :class:`SnapshotPiece`
    with ``pieces``, for the transport to reassemble; refused without.
    """
    src, dst = message.src, message.dst
    kind = message.WhichOneof("kind")
    if kind is None:
        raise MalformedMessage(f"Paxos message with no kind from node {src}", src=src,
                               kind="unknown")
    if node_id is not None:
        if dst != node_id:
            raise MalformedMessage(f"{kind}.dst: {dst} is not this node ({node_id})", src=src,
                                   kind=kind)
        if src == node_id:
            raise MalformedMessage(f"{kind}.src: {src} is this node itself", src=src, kind=kind)
    if peers is not None and src not in peers:
        raise MalformedMessage(
            f"{kind}.src: {src} is not a member of this cluster {tuple(sorted(peers))}",
            src=src, kind=kind)
    try:
        return _decode(kind, src, dst, message, pieces)
    except _Bad as exc:
        raise MalformedMessage(str(exc), src=src, kind=kind) from None


def _items(message: pb.PaxosMessage) -> int:
    kind = message.WhichOneof("kind")
    if kind == "accept":
        return len(message.accept.proposals)
    if kind == "promise":
        return len(message.promise.entries)
    return 0


def encode_batch(messages: Iterable[m.Message]) -> pb.PeerBatch:
    return pb.PeerBatch(messages=[encode(msg) for msg in messages])


def decode_batch(batch: pb.PeerBatch, *, node_id: int | None = None,
                 peers: Collection[int] | None = None) -> list[m.Message]:
    """Every message of ``batch``, or :class:`MalformedMessage` for the first bad one
    (the whole batch is refused). ``node_id`` and ``peers`` as in :func:`decode`."""
    count = len(batch.messages)
    if count > MAX_MESSAGES_PER_BATCH:
        raise MalformedMessage(
            f"batch.messages: {count} items is over the limit of {MAX_MESSAGES_PER_BATCH}",
            src=batch.messages[0].src)
    items = 0
    out = []
    for message in batch.messages:
        items += _items(message)
        if items > MAX_ITEMS_PER_BATCH:
            raise MalformedMessage(
                f"batch: over {MAX_ITEMS_PER_BATCH} proposals and entries in all", src=message.src)
        out.append(decode(message, node_id=node_id, peers=peers))
    return out
