"""The typed results of the state machine, their enum on the wire, and their wire form."""

from __future__ import annotations

import pytest
from support.commands import Log, ack, checkpoint, enqueue, lease, reassign

from dpq.proposing.results import results_from_pb, results_to_pb
from dpq.queue import results
from dpq.queue.results import (
    Checkpointed,
    Enqueued,
    Grant,
    Leased,
    Reassigned,
    Refusal,
    Refused,
    Settled,
)
from dpq.v1 import queue_pb2, replication_pb2


def test_every_refusal_has_its_proto_value_and_back():
    for refusal in Refusal:
        number = results.TO_PB[refusal]
        assert queue_pb2.Refusal.Name(number) == f"REFUSAL_{refusal.value.upper()}"
        assert results.FROM_PB[number] is refusal
    named = set(queue_pb2.Refusal.values())
    assert named - {queue_pb2.REFUSAL_UNSPECIFIED} == set(results.FROM_PB)
    assert queue_pb2.REFUSAL_UNSPECIFIED not in results.FROM_PB


def test_refusal_to_pb_takes_the_enum_its_string_or_nothing():
    assert results.refusal_to_pb(Refusal.LEASE_LOST) == queue_pb2.REFUSAL_LEASE_LOST
    assert results.refusal_to_pb("not_found") == queue_pb2.REFUSAL_NOT_FOUND
    assert results.refusal_to_pb("") == results.refusal_to_pb(None) == 0
    assert results.refusal_to_pb("from_a_newer_node") == queue_pb2.REFUSAL_UNSPECIFIED


def test_refusal_from_pb_prefers_the_enum_and_reads_an_older_peers_string():
    assert results.refusal_from_pb(queue_pb2.REFUSAL_NOT_FOUND, "lease_lost") is Refusal.NOT_FOUND
    assert results.refusal_from_pb(0, "lease_lost") is Refusal.LEASE_LOST
    assert results.refusal_from_pb(0, "") is None


def test_refused_prints_as_the_old_string_and_parses_back():
    refused = Refused(Refusal.INVALID, "lease_ms 0 outside 1..604800000")
    assert str(refused) == "invalid: lease_ms 0 outside 1..604800000"
    assert Refused.parse(str(refused)) == refused
    assert Refused.parse("unknown_command") == Refused(Refusal.UNKNOWN, "")
    assert Refused.parse("gibberish: x") == Refused(Refusal.FAILED, "gibberish: x")


def test_results_are_immutable_values():
    settled = Settled((None, Refusal.LEASE_LOST))
    assert settled.errors() == ["", "lease_lost"]
    with pytest.raises(AttributeError):
        settled.outcomes = ()  # type: ignore[misc]
    assert hash(Leased((Grant(1, 1, 5, 9),))) == hash(Leased((Grant(1, 1, 5, 9),)))


def test_each_command_answers_its_own_type():
    log = Log()
    [e, r, c] = log.run(0, enqueue((1, b"a")), reassign([1], [2]), checkpoint(0))
    assert (e, r, c) == (Enqueued((1,)), Reassigned(1), Checkpointed(0))
    [leased] = log.run(1, lease(1, node=2, lease_ms=10, receipts=[7]))
    assert leased == Leased((Grant(1, 1, 11_000, 7),))
    assert log.run(2, ack((1, 1, 7), (9, 1))) == [Settled((None, Refusal.NOT_FOUND))]


KINDS = ["enqueue", "lease", "ack", "reassign", "checkpoint", "enqueue"]
TYPED = [
    Enqueued((4, 5)),
    Leased((Grant(4, 1, 1_000, 77), Grant(5, 2, 2_000, 78))),
    Settled((None, Refusal.LEASE_LOST, Refusal.NOT_FOUND)),
    Reassigned(3),
    Checkpointed(12),
    Refused(Refusal.NOT_MEMBER, "owners [9] not among the members [1, 2, 3]"),
]


def test_results_cross_the_wire_unchanged():
    assert results_from_pb(results_to_pb(TYPED), KINDS) == TYPED


def test_the_old_string_fields_stay_filled_beside_the_enums():
    wire = results_to_pb(TYPED)
    assert list(wire[2].errors) == ["", "lease_lost", "not_found"]
    assert list(wire[2].refusals) == [0, queue_pb2.REFUSAL_LEASE_LOST, queue_pb2.REFUSAL_NOT_FOUND]
    assert wire[5].error == "not_member: owners [9] not among the members [1, 2, 3]"
    assert wire[5].refusal == queue_pb2.REFUSAL_NOT_MEMBER


def test_a_peer_older_than_the_enums_is_read_from_its_strings():
    old = [replication_pb2.CommandResult(errors=["", "lease_lost"]),
           replication_pb2.CommandResult(error="invalid: a receipt of 0")]
    assert results_from_pb(old, ["nack", "lease"]) == [
        Settled((None, Refusal.LEASE_LOST)), Refused(Refusal.INVALID, "a receipt of 0")]
