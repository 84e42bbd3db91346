"""Every Paxos message survives the trip through protobuf unchanged."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dpq.node import wire
from dpq.paxos import messages as m
from dpq.paxos.types import Ballot, Entry, Proposal, Snapshot
from dpq.v1 import replication_pb2

ids = st.integers(0, 2**32 - 1)
slots = st.integers(0, 2**63)
ballots = st.builds(Ballot, st.integers(0, 2**63), ids)
proposals = st.builds(Proposal, st.text(max_size=8), st.integers(0, 2**63), st.binary(max_size=32))
snapshots = st.builds(Snapshot, slots, st.binary(max_size=32))
entries = st.builds(Entry, slots, ballots, proposals)

message_strategy = st.one_of(
    st.builds(m.Prepare, ids, ids, ballots, slots),
    st.builds(m.Promise, ids, ids, ballots, slots, st.lists(entries, max_size=3).map(tuple),
              st.none() | snapshots),
    st.builds(m.Accept, ids, ids, ballots, slots, st.lists(proposals, max_size=3).map(tuple), slots),
    st.builds(m.Accepted, ids, ids, ballots, slots, slots),
    st.builds(m.InstallSnapshot, ids, ids, ballots, snapshots, slots),
    st.builds(m.Nack, ids, ids, ballots, ballots),
    st.builds(m.Commit, ids, ids, ballots, slots),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(message_strategy, max_size=5))
def test_round_trip_through_bytes(messages):
    data = wire.encode_batch(messages).SerializeToString()
    assert wire.decode_batch(replication_pb2.PeerBatch.FromString(data)) == messages


def test_an_empty_message_is_refused():
    import pytest

    with pytest.raises(ValueError, match="no kind from node 3"):
        wire.decode(replication_pb2.PaxosMessage(src=3, dst=1))
