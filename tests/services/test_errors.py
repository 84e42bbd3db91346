"""Exceptions → gRPC status by lookup at the edge, and refusal reasons → client exceptions."""

from __future__ import annotations

import grpc
import pytest

from dpq.client import errors as client_errors
from dpq.errors import Forwarded, QueueError, ResourceExhausted, Unavailable
from dpq.paxos.core import NotLeader
from dpq.queue.results import Refusal
from dpq.queue.validate import InvalidArgument
from dpq.services.errors import CORE_CODES, status_of
from dpq.services.queue import _ref_response
from dpq.v1 import queue_pb2


@pytest.mark.parametrize("exc, code, details", [
    (InvalidArgument("priority 9 outside 1..5"), grpc.StatusCode.INVALID_ARGUMENT,
     "priority 9 outside 1..5"),
    (ResourceExhausted("over the budget"), grpc.StatusCode.RESOURCE_EXHAUSTED, "over the budget"),
    (Unavailable("no quorum", "127.0.0.1:7001"), grpc.StatusCode.UNAVAILABLE,
     "no quorum; the leader is at 127.0.0.1:7001: retry"),
    (Unavailable("no quorum", None), grpc.StatusCode.UNAVAILABLE,
     "no quorum; no leader is known yet: retry"),
    (Forwarded(grpc.StatusCode.NOT_FOUND, "as the node said"), grpc.StatusCode.NOT_FOUND,
     "as the node said"),
    (NotLeader(None), grpc.StatusCode.UNAVAILABLE, str(NotLeader(None))),
])
def test_each_expected_failure_has_its_status(exc, code, details):
    assert status_of(exc) == (code, details)


def test_every_queue_error_carries_a_code_and_anything_else_is_not_expected():
    for kind in (Unavailable, ResourceExhausted, Forwarded):
        assert issubclass(kind, QueueError)
    assert ResourceExhausted.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_of(KeyError("a bug")) is None
    assert status_of(ValueError("a bug")) is None


def test_a_subclass_of_a_core_exception_takes_its_code():
    class Narrower(InvalidArgument):
        pass

    assert InvalidArgument in CORE_CODES
    assert status_of(Narrower("x")) == (grpc.StatusCode.INVALID_ARGUMENT, "x")


def test_ref_results_carry_the_string_and_the_enum():
    refs = [queue_pb2.JobRef(job_id=i, attempt=1) for i in (1, 2, 3, 4)]
    response = _ref_response(refs, ["", Refusal.LEASE_LOST, "not_found", "from_a_newer_node"])
    assert [(r.job_id, r.ok, r.error, r.reason) for r in response.results] == [
        (1, True, "", queue_pb2.REFUSAL_UNSPECIFIED),
        (2, False, "lease_lost", queue_pb2.REFUSAL_LEASE_LOST),
        (3, False, "not_found", queue_pb2.REFUSAL_NOT_FOUND),
        (4, False, "from_a_newer_node", queue_pb2.REFUSAL_UNSPECIFIED),
    ]


@pytest.mark.parametrize("reason, kind", [
    ("lease_lost", client_errors.LeaseLostError),
    ("not_leased", client_errors.LeaseLostError),
    ("not_found", client_errors.JobNotFoundError),
])
def test_the_client_maps_known_reasons_by_table(reason, kind):
    error = client_errors.job_ref_error(7, 2, reason, "ack")
    assert type(error) is kind and error.reason == reason and error.job_id == 7


def test_an_unknown_reason_is_a_plain_job_ref_error_not_a_lost_lease():
    error = client_errors.job_ref_error(7, 2, "from_a_newer_node", "ack")
    assert type(error) is client_errors.JobRefError
    assert not isinstance(error, client_errors.LeaseLostError)
    assert "from_a_newer_node" in str(error)


def test_the_clients_table_speaks_the_wire_enum():
    for reason in client_errors.JOB_REF_ERRORS:
        assert queue_pb2.Refusal.Value(f"REFUSAL_{reason.upper()}")
        assert Refusal(reason)  # and the server's Python enum
