"""Paxos messages ↔ ``dpq.v1`` protobuf, for the Replication stream.

The core's messages are plain NamedTuples (``dpq.paxos.messages``); this is
the only place that knows both shapes. Proposal data (a stamp and a serialised
CommandBatch) is carried as bytes and never parsed here.
"""

from __future__ import annotations

from collections.abc import Iterable

from dpq.paxos import messages as m
from dpq.paxos.types import Ballot, Entry, Proposal, Snapshot
from dpq.v1 import replication_pb2 as pb


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
            pb.Accepted(ballot=_ballot(message.ballot), match=message.match, last=message.last)
        )
    elif isinstance(message, m.Prepare):
        out.prepare.CopyFrom(pb.Prepare(ballot=_ballot(message.ballot), from_slot=message.from_slot))
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
        out.nack.CopyFrom(pb.Nack(ballot=_ballot(message.ballot), rejected=_ballot(message.rejected)))
    else:
        raise TypeError(f"not a Paxos message: {message!r}")
    return out


def decode(message: pb.PaxosMessage) -> m.Message:
    src, dst = message.src, message.dst
    kind = message.WhichOneof("kind")
    if kind == "accept":
        a = message.accept
        return m.Accept(src, dst, _from_ballot(a.ballot), a.first_slot,
                        tuple(_from_proposal(p) for p in a.proposals), a.commit)
    if kind == "accepted":
        a = message.accepted
        return m.Accepted(src, dst, _from_ballot(a.ballot), a.match, a.last)
    if kind == "prepare":
        p = message.prepare
        return m.Prepare(src, dst, _from_ballot(p.ballot), p.from_slot)
    if kind == "promise":
        p = message.promise
        entries = tuple(
            Entry(e.slot, _from_ballot(e.ballot), _from_proposal(e.proposal)) for e in p.entries
        )
        snap = Snapshot(p.snapshot.slot, p.snapshot.data) if p.HasField("snapshot") else None
        return m.Promise(src, dst, _from_ballot(p.ballot), p.commit, entries, snap)
    if kind == "install_snapshot":
        s = message.install_snapshot
        return m.InstallSnapshot(src, dst, _from_ballot(s.ballot),
                                 Snapshot(s.snapshot.slot, s.snapshot.data), s.commit)
    if kind == "commit":
        c = message.commit
        return m.Commit(src, dst, _from_ballot(c.ballot), c.commit)
    if kind == "nack":
        n = message.nack
        return m.Nack(src, dst, _from_ballot(n.ballot), _from_ballot(n.rejected))
    raise ValueError(f"Paxos message with no kind from node {src}")


def encode_batch(messages: Iterable[m.Message]) -> pb.PeerBatch:
    return pb.PeerBatch(messages=[encode(msg) for msg in messages])


def decode_batch(batch: pb.PeerBatch) -> list[m.Message]:
    return [decode(msg) for msg in batch.messages]
