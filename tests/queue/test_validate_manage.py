"""The edge's checks on the managing requests: a bad field is refused with its name,
its value and its limit, before anything is proposed."""

from __future__ import annotations

import pytest

from dpq.proposing.results import results_from_pb, results_to_pb
from dpq.queue import validate
from dpq.queue.results import Affected, Paused
from dpq.queue.validate import InvalidArgument
from dpq.v1 import log_pb2, queue_pb2

MEMBERS = frozenset({1, 2, 3})


@pytest.mark.parametrize("selector, message", [
    (queue_pb2.JobSelector(), r"selector: no field is set.*selector\.all = true"),
    (queue_pb2.JobSelector(job_ids=[1, 0]), r"selector\.job_ids\[1\]: 0 is not a job id"),
    (queue_pb2.JobSelector(job_ids=range(1, 10_002)),
     r"selector\.job_ids: 10001 job ids is over the limit of 10000"),
    (queue_pb2.JobSelector(state=99), r"selector\.state: 99 is not a JobState"),
    (queue_pb2.JobSelector(priority=6), r"selector\.priority: 6 is outside 1\.\.5"),
    (queue_pb2.JobSelector(queue="no spaces"), r"selector\.queue: 'no spaces'"),
    (queue_pb2.JobSelector(dedup_key_prefix="k" * 300),
     r"selector\.dedup_key_prefix: 300 characters is over the limit of 256"),
])
def test_a_bad_selector_is_refused_naming_the_field(selector, message):
    with pytest.raises(InvalidArgument, match=message):
        validate.selector(selector)


def test_all_selects_everything_only_when_asked():
    validate.selector(queue_pb2.JobSelector(all=True))
    validate.selector(queue_pb2.JobSelector(queue="mail", state=queue_pb2.DEAD))


@pytest.mark.parametrize("check, message", [
    (lambda: validate.priority(0), r"priority: 0 is outside 1\.\.5"),
    (lambda: validate.pause_duration(31 * 86_400_000),
     r"duration_ms: 2678400000 ms is over the limit of 2592000000 ms"),
    (lambda: validate.nack_error("é" * 600),
     r"error: 1200 bytes of UTF-8 is over the limit of 1024"),
    (lambda: validate.list_jobs(queue_pb2.ListJobsRequest(limit=5000)),
     r"limit: 5000 jobs is over the limit of 1000"),
    (lambda: validate.list_jobs(queue_pb2.ListJobsRequest(state=42)), r"state: 42 is not"),
    (lambda: validate.job_id(0), r"job_id: 0 is not a job id"),
])
def test_bad_managing_fields_are_refused_naming_field_value_and_limit(check, message):
    with pytest.raises(InvalidArgument, match=message):
        check()


def test_an_error_of_exactly_the_limit_passes():
    validate.nack_error("x" * 1024)
    validate.nack_error("é" * 512)


def test_a_peer_proposing_a_bad_operator_command_is_refused_before_the_log():
    batch = log_pb2.CommandBatch(commands=[log_pb2.Command(
        set_priority=log_pb2.SetPriorityCommand(selector=queue_pb2.JobSelector(all=True),
                                                priority=7))])
    with pytest.raises(InvalidArgument, match=r"commands\[0\]\.set_priority\.priority: 7"):
        validate.commands(batch, validate.DEFAULT_LIMITS, MEMBERS)


def test_operator_results_survive_the_wire():
    results = [Affected(3, 1), Paused("mail", True, 123, False), Affected(0),
               Paused("mail", False, 0, True)]
    back = results_from_pb(results_to_pb(results), ["cancel", "pause", "purge", "resume"])
    assert back == results
