"""The admin client's values and the nack error, without a cluster (dpq.client.admin,
dpq.client.job.error_text, the settler's grouping of nacks).

The end-to-end behaviour against real nodes is tests/client/test_admin.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dpq.client import (
    JobNotFoundError,
    JobState,
    NotFoundError,
    Selector,
    ServerError,
    UnknownJobError,
)
from dpq.client._endpoints import Channels, Endpoints
from dpq.client._held import Held, JobRecord
from dpq.client._retry import RetryPolicy
from dpq.client._settle import Settler, _Nack
from dpq.client.admin import Explanation, Hold, JobInfo, as_selector, duration_ms, state_pb
from dpq.client.errors import server_error
from dpq.client.job import MAX_ERROR_BYTES, error_text
from dpq.v1 import queue_pb2

# ------------------------------------------------------------------ selectors


def test_keywords_make_the_selector_the_server_reads():
    pb = as_selector(job_ids=[3, 1], queue="mail", state="DEAD", priority=2,
                     dedup_key_prefix="user-7:").to_pb()
    assert list(pb.job_ids) == [3, 1]
    assert (pb.queue, pb.state, pb.priority, pb.dedup_key_prefix, pb.all) == (
        "mail", queue_pb2.DEAD, 2, "user-7:", False)


def test_unset_fields_mean_any_and_all_must_be_asked_for():
    empty = as_selector()
    assert empty.empty and not empty.all
    assert empty.to_pb() == queue_pb2.JobSelector()
    everything = as_selector(all=True)
    assert everything.empty and everything.to_pb() == queue_pb2.JobSelector(all=True)


def test_a_selector_or_keywords_but_not_both():
    chosen = Selector(job_ids=(5,))
    assert as_selector(chosen) is chosen
    with pytest.raises(TypeError, match="not both"):
        as_selector(chosen, queue="mail")
    with pytest.raises(TypeError, match="job_ids"):
        as_selector(job_ids=17)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Selector"):
        as_selector([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(("state", "value"), [
    (None, queue_pb2.JOB_STATE_UNSPECIFIED), ("dead", queue_pb2.DEAD),
    ("Cancelled", queue_pb2.CANCELLED), (JobState.DELAYED, queue_pb2.DELAYED),
    ("leased", queue_pb2.LEASED), ("ready", queue_pb2.READY), ("done", queue_pb2.DONE),
])
def test_states_are_taken_by_name_or_member(state, value):
    assert state_pb(state) == value


@pytest.mark.parametrize("state", ["dying", "unknown", "JOB_STATE_UNSPECIFIED"])
def test_a_state_the_client_cannot_name_is_refused_before_sending(state):
    with pytest.raises(ValueError, match="unknown job state"):
        state_pb(state)


def test_types_are_checked_before_sending():
    with pytest.raises(TypeError, match="priority"):
        Selector(priority="1").to_pb()  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="job id"):
        Selector(job_ids=("7",)).to_pb()  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="queue"):
        Selector(queue=b"mail").to_pb()  # type: ignore[arg-type]


# ------------------------------------------------------------------- pauses


@pytest.mark.parametrize(("duration", "ms"), [
    (None, 0), (600, 600_000), (0.0004, 1), (timedelta(minutes=10), 600_000),
    (1.0001, 1001),
])
def test_pause_durations_round_up_to_milliseconds_and_none_is_until_resumed(duration, ms):
    assert duration_ms(duration) == ms


@pytest.mark.parametrize("duration", [0, -5, timedelta(0)])
def test_a_pause_of_no_time_is_refused(duration):
    with pytest.raises(ValueError, match="positive"):
        duration_ms(duration)


# ------------------------------------------------------------------ results


def test_job_info_turns_times_and_states_into_python_values():
    pb = queue_pb2.JobInfo(job_id=17, queue="mail", priority=2, payload_bytes=3, payload=b"abc",
                           created_at_us=1_700_000_000_000_000, state=queue_pb2.LEASED,
                           attempt=2, owner_node=3, ready_at_us=1_700_000_001_000_000,
                           lease_expires_at_us=1_700_000_031_000_000, consumer_id="c-1",
                           last_error="ValueError: boom", cancel_requested=True)
    job = JobInfo.from_pb(pb)
    assert (job.job_id, job.queue, job.priority, job.state, job.attempt, job.owner_node) == (
        17, "mail", 2, JobState.LEASED, 2, 3)
    assert job.state == "leased"
    assert job.created_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert job.lease_expires_at - job.ready_at == timedelta(seconds=30)
    assert job.finished_at is None  # 0 on the wire: not known
    assert job.payload == b"abc" and job.cancel_requested and job.last_error == "ValueError: boom"
    assert JobInfo.from_pb(pb, with_payload=False).payload is None
    with pytest.raises(AttributeError):
        job.state = JobState.DONE  # type: ignore[misc]


def test_values_a_newer_server_may_send_become_unknown_not_errors():
    job = JobInfo.from_pb(queue_pb2.JobInfo(job_id=1, state=99))  # type: ignore[arg-type]
    assert job.state is JobState.UNKNOWN
    why = Explanation.from_pb(queue_pb2.ExplainJobResponse(
        holds=[queue_pb2.HOLD_PAUSED, 42], reasons=["paused", "?"],  # type: ignore[list-item]
        consumers_known=False, waiting_consumers=3))
    assert why.holds == (Hold.PAUSED, Hold.UNKNOWN)
    assert why.waiting_consumers is None  # the answering node could not know
    assert why.estimated_start is None


def test_not_found_of_a_job_is_a_server_error_and_a_job_not_found_error():
    plain = server_error(grpc.StatusCode.NOT_FOUND, "no job 5", "GetJob", "127.0.0.1:1")
    assert isinstance(plain, NotFoundError)
    error = UnknownJobError(5, plain)
    assert isinstance(error, JobNotFoundError) and isinstance(error, ServerError)
    assert (error.job_id, error.code, error.details, error.method) == (
        5, grpc.StatusCode.NOT_FOUND, "no job 5", "GetJob")
    assert "no job 5" in str(error)


# ------------------------------------------------------------ the nack error


def test_an_exception_becomes_its_type_and_message():
    assert error_text(ValueError("bad row 7")) == "ValueError: bad row 7"
    assert error_text(None) == "" and error_text("as is") == "as is"
    with pytest.raises(TypeError):
        error_text(7)  # type: ignore[arg-type]


def test_a_long_error_is_cut_at_a_character_boundary():
    # 2-, 3- and 4-byte characters around the cut: none may be split.
    text = "x" + "é€😀" * 200
    cut = error_text(text)
    data = cut.encode("utf-8")
    assert len(data) <= MAX_ERROR_BYTES and len(data) > MAX_ERROR_BYTES - 4 - 3
    assert cut.endswith("…") and text.startswith(cut[:-1])


def test_lone_surrogates_are_replaced_so_the_text_can_travel():
    assert error_text("bad name \udcff") == "bad name ?"


@given(st.text(), st.integers(min_value=3, max_value=2000))
def test_cut_errors_are_valid_utf8_within_the_limit_and_a_prefix(text, limit):
    cut = error_text(text, limit)
    data = cut.encode("utf-8")
    assert len(data) <= limit
    clean = text.encode("utf-8", "replace").decode("utf-8")
    if len(clean.encode("utf-8")) <= limit:
        assert cut == clean
    else:
        assert cut.endswith("…") and clean.startswith(cut[:-1])


# ------------------------------------------------- nacks grouped by their error


class _Stream:
    """An open Consume stream that records each settlement and accepts it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[int], int, str]] = []

    async def settle(self, kind, refs, value, timeout, error=""):
        self.sent.append((kind, [r.job_id for r in refs], value, error))
        await asyncio.sleep(0)
        return [queue_pb2.RefResult() for _ in refs]


def _settler(stream: _Stream, jobs: int) -> tuple[Settler, list[JobRecord]]:
    held = Held(capacity=jobs)
    settler = Settler(Endpoints(Channels(), ["node:1"]), RetryPolicy(), held)
    settler.route = lambda address: stream
    records = [JobRecord(queue_pb2.Job(job_id=i, attempt=1), "node:1", 1e9, 1e9, 0)
               for i in range(1, jobs + 1)]
    held.receive(0, records)
    return settler, records


def test_concurrent_nacks_keep_each_jobs_error_and_delay():
    async def main():
        stream = _Stream()
        settler, records = _settler(stream, 5)
        await asyncio.gather(
            settler.nack(records[0], 1000, "ValueError: a"),
            settler.nack(records[1], 1000, "KeyError: b"),
            settler.nack(records[2], 1000, "ValueError: a"),
            settler.nack(records[3], 0, "ValueError: a"),
            settler.nack(records[4], 1000, ""),
        )
        return stream.sent

    sent = asyncio.run(main())
    got = {job: (value, error) for kind, ids, value, error in sent for job in ids}
    assert sum(len(ids) for _, ids, _, _ in sent) == 5 and all(k == "nack" for k, *_ in sent)
    assert got == {1: (1000, "ValueError: a"), 2: (1000, "KeyError: b"),
                   3: (1000, "ValueError: a"), 4: (0, "ValueError: a"), 5: (1000, "")}


def test_a_batch_of_nacks_is_one_request_per_delay_and_error():
    async def main():
        stream = _Stream()
        settler, records = _settler(stream, 5)
        keys = [(1000, "ValueError: a"), (1000, "KeyError: b"), (1000, "ValueError: a"),
                (0, "ValueError: a"), (1000, "")]
        results = await settler._send_nack_batch(
            [_Nack(r, d, e) for r, (d, e) in zip(records, keys, strict=True)])
        return stream.sent, results

    sent, results = asyncio.run(main())
    assert results == [("", False)] * 5
    assert sorted((value, error, ids) for _, ids, value, error in sent) == [
        (0, "ValueError: a", [4]), (1000, "", [5]), (1000, "KeyError: b", [2]),
        (1000, "ValueError: a", [1, 3])]
