"""Every Paxos message survives the trip through protobuf unchanged, and nothing out
of bounds gets past ``wire.decode`` (issue 10: a round or a seq of 2**63 killed nodes)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpq.node import transport, wire
from dpq.node.snapshot_pieces import SnapshotPiece
from dpq.paxos import messages as m
from dpq.paxos.core import Config
from dpq.paxos.types import (
    MAX_CLIENT_ID_BYTES,
    MAX_ENTRIES_PER_MESSAGE,
    MAX_ITEMS_PER_BATCH,
    MAX_MESSAGES_PER_BATCH,
    MAX_PROPOSALS_PER_MESSAGE,
    MAX_ROUND,
    MAX_SEQ,
    MAX_SLOT,
    MAX_SNAPSHOT_BYTES,
    Ballot,
    Entry,
    Proposal,
    Snapshot,
)
from dpq.v1 import replication_pb2 as pb

ids = st.integers(0, 2**32 - 1)
slots = st.integers(0, MAX_SLOT)
ballots = st.builds(Ballot, st.integers(0, MAX_ROUND), ids)
proposals = st.builds(Proposal, st.text(max_size=8), st.integers(0, MAX_SEQ),
                      st.binary(max_size=32))
snapshots = st.builds(Snapshot, slots, st.binary(max_size=32))
entries = st.builds(Entry, slots, ballots, proposals)
accepts = st.builds(
    lambda src, dst, b, first, ps, commit: m.Accept(src, dst, b, max(first, 1) if ps else first,
                                                   ps, commit),
    ids, ids, ballots, st.integers(0, MAX_SLOT - 3), st.lists(proposals, max_size=3).map(tuple),
    slots)

message_strategy = st.one_of(
    st.builds(m.Prepare, ids, ids, ballots, slots),
    st.builds(m.Promise, ids, ids, ballots, slots, st.lists(entries, max_size=3).map(tuple),
              st.none() | snapshots),
    accepts,
    st.builds(m.Accepted, ids, ids, ballots, slots, slots, st.booleans(),
              st.integers(0, MAX_SEQ)),
    st.builds(m.InstallSnapshot, ids, ids, ballots, snapshots, slots),
    st.builds(m.Nack, ids, ids, ballots, ballots),
    st.builds(m.Commit, ids, ids, ballots, slots),
)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(st.lists(message_strategy, max_size=5))
def test_round_trip_through_bytes(messages):
    data = wire.encode_batch(messages).SerializeToString()
    assert wire.decode_batch(pb.PeerBatch.FromString(data)) == messages


def test_an_empty_message_is_refused():
    with pytest.raises(wire.MalformedMessage, match="no kind from node 3"):
        wire.decode(pb.PaxosMessage(src=3, dst=1))


def refused(message: pb.PaxosMessage, **addressing) -> wire.MalformedMessage:
    with pytest.raises(wire.MalformedMessage) as caught:
        wire.decode_batch(pb.PeerBatch(messages=[message]), **addressing)
    assert isinstance(caught.value, ValueError)
    return caught.value


def test_a_round_of_2_63_is_refused_naming_the_field_the_value_and_the_limit():
    # The attack: one Prepare per node at round 2**63 killed all three (WAL int64).
    msg = pb.PaxosMessage(src=2, dst=1, prepare=pb.Prepare(ballot=pb.Ballot(round=2**63, node=2)))
    exc = refused(msg)
    assert str(exc) == ("prepare.ballot.round: 9223372036854775808 is over the limit of "
                        "4611686018427387904")
    assert (exc.src, exc.kind) == (2, "prepare")
    # The limit itself passes.
    top = pb.Ballot(round=MAX_ROUND, node=2)
    ok = pb.PaxosMessage(src=2, dst=1, prepare=pb.Prepare(ballot=top))
    assert wire.decode(ok).ballot.round == MAX_ROUND


@pytest.mark.parametrize("message, field", [
    (pb.PaxosMessage(accept=pb.Accept(first_slot=MAX_SLOT + 1)), "accept.first_slot"),
    (pb.PaxosMessage(accept=pb.Accept(commit=2**64 - 1)), "accept.commit"),
    (pb.PaxosMessage(accept=pb.Accept(first_slot=1, proposals=[
        pb.PaxosProposal(client_id="c", seq=2**63)])), "accept.proposals[0].seq"),
    (pb.PaxosMessage(accept=pb.Accept(first_slot=1, proposals=[
        pb.PaxosProposal(), pb.PaxosProposal(client_id="x" * (MAX_CLIENT_ID_BYTES + 1))])),
     "accept.proposals[1].client_id"),
    (pb.PaxosMessage(accepted=pb.Accepted(match=2**63)), "accepted.match"),
    (pb.PaxosMessage(accepted=pb.Accepted(last=2**63)), "accepted.last"),
    (pb.PaxosMessage(accepted=pb.Accepted(rejoin=2**62 + 1)), "accepted.rejoin"),
    (pb.PaxosMessage(prepare=pb.Prepare(from_slot=2**63)), "prepare.from_slot"),
    (pb.PaxosMessage(promise=pb.Promise(commit=2**63)), "promise.commit"),
    (pb.PaxosMessage(promise=pb.Promise(entries=[pb.PaxosEntry(slot=1), pb.PaxosEntry(
        slot=2, ballot=pb.Ballot(round=2**62 + 1))])), "promise.entries[1].ballot.round"),
    (pb.PaxosMessage(promise=pb.Promise(entries=[pb.PaxosEntry(slot=2**63)])),
     "promise.entries[0].slot"),
    (pb.PaxosMessage(promise=pb.Promise(entries=[pb.PaxosEntry(
        slot=1, proposal=pb.PaxosProposal(seq=2**64 - 1))])), "promise.entries[0].proposal.seq"),
    (pb.PaxosMessage(promise=pb.Promise(snapshot=pb.PaxosSnapshot(slot=2**63))),
     "promise.snapshot.slot"),
    (pb.PaxosMessage(install_snapshot=pb.InstallSnapshot(snapshot=pb.PaxosSnapshot(slot=2**63))),
     "install_snapshot.snapshot.slot"),
    (pb.PaxosMessage(install_snapshot=pb.InstallSnapshot(commit=2**63)),
     "install_snapshot.commit"),
    (pb.PaxosMessage(commit=pb.Commit(commit=2**63)), "commit.commit"),
    (pb.PaxosMessage(nack=pb.Nack(rejected=pb.Ballot(round=2**63))), "nack.rejected.round"),
    (pb.PaxosMessage(nack=pb.Nack(ballot=pb.Ballot(round=2**64 - 1))), "nack.ballot.round"),
])
def test_every_number_is_bounded(message, field):
    message.src, message.dst = 2, 1
    exc = refused(message)
    assert str(exc).startswith(f"{field}: "), str(exc)
    assert "limit" in str(exc)


def test_an_accept_may_not_run_past_the_last_slot_or_start_at_zero():
    three = [pb.PaxosProposal(client_id="c", seq=1)] * 3
    past = pb.PaxosMessage(src=2, dst=1, accept=pb.Accept(first_slot=MAX_SLOT - 1, proposals=three))
    assert "accept.first_slot: " in str(refused(past))
    zero = pb.PaxosMessage(src=2, dst=1, accept=pb.Accept(first_slot=0, proposals=three))
    assert "accept.first_slot: 0 with 3 proposals" in str(refused(zero))
    fits = pb.PaxosMessage(src=2, dst=1, accept=pb.Accept(first_slot=MAX_SLOT - 2, proposals=three))
    assert wire.decode(fits).last_slot == MAX_SLOT


@pytest.mark.slow
def test_counts_are_bounded():
    many = [pb.PaxosProposal()] * (MAX_PROPOSALS_PER_MESSAGE + 1)
    exc = refused(pb.PaxosMessage(src=2, dst=1, accept=pb.Accept(first_slot=1, proposals=many)))
    assert str(exc) == (f"accept.proposals: {MAX_PROPOSALS_PER_MESSAGE + 1} items is over the "
                        f"limit of {MAX_PROPOSALS_PER_MESSAGE}")
    entries = [pb.PaxosEntry()] * (MAX_ENTRIES_PER_MESSAGE + 1)
    exc = refused(pb.PaxosMessage(src=2, dst=1, promise=pb.Promise(entries=entries)))
    assert str(exc).startswith("promise.entries: ")
    heartbeat = pb.PaxosMessage(src=2, dst=1, accept=pb.Accept())
    with pytest.raises(wire.MalformedMessage, match="batch.messages: .* over the limit"):
        wire.decode_batch(pb.PeerBatch(messages=[heartbeat] * (MAX_MESSAGES_PER_BATCH + 1)))
    full = pb.PaxosMessage(src=2, dst=1, accept=pb.Accept(
        first_slot=1, proposals=[pb.PaxosProposal()] * MAX_PROPOSALS_PER_MESSAGE))
    too_many = MAX_ITEMS_PER_BATCH // MAX_PROPOSALS_PER_MESSAGE + 1
    with pytest.raises(wire.MalformedMessage, match="proposals and entries in all"):
        wire.decode_batch(pb.PeerBatch(messages=[full] * too_many))


# --------------------------------------------------------------------------- snapshot pieces


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(1, 64), slots, ballots, slots)
def test_a_snapshot_in_pieces_survives_the_trip_through_bytes(data, size, slot, ballot, commit):
    message = m.InstallSnapshot(2, 1, ballot, Snapshot(slot, data), commit)
    got, offset = [], 0
    for batch in wire.encode_pieces(message, size):
        (message_pb,) = pb.PeerBatch.FromString(batch.SerializeToString()).messages
        piece = wire.decode(message_pb, pieces=True)
        assert isinstance(piece, SnapshotPiece)
        assert (piece.src, piece.dst, piece.ballot, piece.slot, piece.commit) == (
            2, 1, ballot, slot, commit)
        assert (piece.offset, piece.total) == (offset, len(data))
        assert 0 < len(piece.data) <= size
        offset += len(piece.data)
        got.append(piece.data)
    assert b"".join(got) == data


def _install(**snapshot) -> pb.PaxosMessage:
    return pb.PaxosMessage(src=2, dst=1, install_snapshot=pb.InstallSnapshot(
        ballot=pb.Ballot(round=1, node=2), snapshot=pb.PaxosSnapshot(slot=5, **snapshot)))


def test_a_whole_snapshot_has_total_0_and_decodes_as_before():
    whole = wire.decode(_install(data=b"abc"), pieces=True)
    assert whole == m.InstallSnapshot(2, 1, Ballot(1, 2), Snapshot(5, b"abc"), 0)
    assert wire.encode(whole).install_snapshot.snapshot.total == 0


def test_snapshot_pieces_are_checked_naming_the_field_the_value_and_the_limit(monkeypatch):
    def problem(message, pieces=True):
        with pytest.raises(wire.MalformedMessage) as caught:
            wire.decode(message, pieces=pieces)
        return str(caught.value)

    assert problem(_install(total=MAX_SNAPSHOT_BYTES + 1, data=b"x")) == (
        f"install_snapshot.snapshot.total: {MAX_SNAPSHOT_BYTES + 1} is over the limit of "
        f"{MAX_SNAPSHOT_BYTES}")
    assert problem(_install(total=10, offset=8, data=b"xyz")) == (
        "install_snapshot.snapshot.offset: 8 + 3 bytes of data is over the total of 10")
    assert problem(_install(total=2**63, data=b"x")).startswith(
        "install_snapshot.snapshot.total: 9223372036854775808 is over the limit")
    # Only the transport takes pieces; elsewhere (and in a Promise) a snapshot is whole.
    assert problem(_install(total=10, data=b"x"), pieces=False) == (
        "install_snapshot.snapshot.total: 10 is over the limit of 0")
    assert problem(_install(offset=3, data=b"x")) == (
        "install_snapshot.snapshot.offset: 3 is over the limit of 0")
    promise = pb.PaxosMessage(src=2, dst=1, promise=pb.Promise(
        snapshot=pb.PaxosSnapshot(slot=5, total=10, data=b"x")))
    assert problem(promise) == "promise.snapshot.total: 10 is over the limit of 0"
    # A whole snapshot over the limit (1 GiB is too big to build here: the limit shrinks).
    monkeypatch.setattr(wire, "MAX_SNAPSHOT_BYTES", 2)
    assert problem(_install(data=b"abc")) == (
        "install_snapshot.snapshot.data: 3 bytes is over the limit of 2")


def test_what_honest_nodes_send_fits_the_limits():
    # A transport batch holds at most MAX_QUEUED messages; an Accept at most
    # max_entries_per_message proposals (Config refuses more than a peer accepts).
    assert transport.MAX_QUEUED <= MAX_MESSAGES_PER_BATCH
    assert Config(1, (1, 2, 3)).max_entries_per_message <= MAX_PROPOSALS_PER_MESSAGE
    with pytest.raises(ValueError, match="max_entries_per_message"):
        Config(1, (1, 2, 3), max_entries_per_message=MAX_PROPOSALS_PER_MESSAGE + 1,
               max_slots_ahead=1 << 20)


def test_misaddressed_messages_are_refusable():
    def heartbeat(src, dst):
        return pb.PaxosMessage(src=src, dst=dst, accept=pb.Accept(ballot=pb.Ballot(round=1)))

    here = {"node_id": 1, "peers": {2, 3}}
    assert wire.decode_batch(pb.PeerBatch(messages=[heartbeat(2, 1)]), **here)
    assert str(refused(heartbeat(2, 3), **here)) == "accept.dst: 3 is not this node (1)"
    assert str(refused(heartbeat(1, 1), **here)) == "accept.src: 1 is this node itself"
    assert str(refused(heartbeat(9, 1), **here)) == (
        "accept.src: 9 is not a member of this cluster (2, 3)")
    # One bad message refuses the whole batch.
    batch = pb.PeerBatch(messages=[heartbeat(2, 1), heartbeat(2, 3)])
    with pytest.raises(wire.MalformedMessage):
        wire.decode_batch(batch, **here)


# --------------------------------------------------------------------------- the servicer edge


class _Aborted(Exception):
    pass


class _Context:
    """Just enough of grpc.aio.ServicerContext for the servicer's own logic."""

    def __init__(self) -> None:
        self.code = self.details = None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5555"

    async def abort(self, code, details):
        self.code, self.details = code, details
        raise _Aborted(details)


CLUSTER = "c0ffee" * 5 + "00"


class _Driver:
    def __init__(self) -> None:
        self.delivered: list = []

    def deliver(self, messages) -> None:
        self.delivered.extend(messages)


def _servicer():
    """A Replication servicer over a real Transport whose links are never started."""
    import grpc

    from dpq.node.transport import Transport
    from dpq.services.replication import ReplicationServicer

    driver = _Driver()
    transport = Transport(1, {n: f"127.0.0.1:{n}" for n in (1, 2, 3)}, cluster_id=CLUSTER,
                          client_address="127.0.0.1:9", channel=grpc.aio.insecure_channel)
    return ReplicationServicer(driver, transport, router=None, health=None,
                               admit=lambda batch: None, cluster_id=CLUSTER), driver, transport


def test_the_stream_drops_malformed_messages_logs_each_problem_once_and_stays_open(caplog):
    import asyncio
    import logging

    def batch(*messages):
        return pb.PeerBatch(cluster_id=CLUSTER, sender=2, messages=messages)

    good = batch(pb.PaxosMessage(src=2, dst=1, accept=pb.Accept()))
    bad = batch(pb.PaxosMessage(src=2, dst=1,
                                prepare=pb.Prepare(ballot=pb.Ballot(round=2**63, node=2))))
    stray = batch(pb.PaxosMessage(src=2, dst=3, accept=pb.Accept()))

    async def run():
        servicer, driver, transport = _servicer()

        async def batches():
            for b in (bad, good, bad, stray, bad, good):
                yield b

        await servicer.Stream(batches(), None)
        return driver, transport

    with caplog.at_level(logging.WARNING, logger="dpq.node.transport"):
        driver, transport = asyncio.run(run())
    assert len(driver.delivered) == 2  # both good messages, after the bad ones
    assert transport.dropped_messages == 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # one line per problem and sender
    assert "prepare.ballot.round: 9223372036854775808 is over the limit" in lines[0]
    assert "with src 2, dst 3" in lines[1]


def test_the_stream_delivers_a_snapshot_in_pieces_whole_and_before_what_followed(caplog):
    import asyncio
    import logging

    data = bytes(range(256)) * 40
    snap = m.InstallSnapshot(2, 1, Ballot(4, 2), Snapshot(9, data), 8)
    pieces = list(wire.encode_pieces(snap, 1000))
    accept = pb.PaxosMessage(src=2, dst=1, accept=pb.Accept(ballot=pb.Ballot(round=4, node=2)))
    # The last piece shares its batch with an Accept; a stray piece (another slot) is dropped.
    stray = list(wire.encode_pieces(snap._replace(snapshot=Snapshot(10, data)), 1000))[3]
    pieces[-1].messages.append(accept)
    batches = [pieces[0], stray, *pieces[1:]]
    for b in batches:
        b.cluster_id, b.sender = CLUSTER, 2

    async def run():
        servicer, driver, transport = _servicer()

        async def stream():
            for b in batches:
                yield b

        await servicer.Stream(stream(), None)
        return driver, transport

    with caplog.at_level(logging.WARNING, logger="dpq.node.transport"):
        driver, transport = asyncio.run(run())
    assert driver.delivered == [snap, wire.decode(accept)]
    assert transport.dropped_messages == 1 and transport.pieces.dropped == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("dropped a snapshot piece from node 2 (slot 10, ballot 4.2, total "
                           "10240) is not of the snapshot being received (slot 9"), line


def test_propose_refuses_a_seq_or_client_id_out_of_range_with_invalid_argument():
    import asyncio

    import grpc

    servicer, _, _ = asyncio.run(_async(_servicer))
    for request, text in [
        (pb.ProposeRequest(client_id="c", seq=2**63),
         "Replication/Propose: seq: 9223372036854775808 is over the limit of 4611686018427387904"),
        (pb.ProposeRequest(client_id="c" * 300, seq=1),
         "Replication/Propose: client_id: 300 characters is over the limit of 256 bytes"),
    ]:
        context = _Context()
        with pytest.raises(_Aborted):
            asyncio.run(servicer.Propose(request, context))
        assert context.code is grpc.StatusCode.INVALID_ARGUMENT and context.details == text


async def _async(fn):
    return fn()
