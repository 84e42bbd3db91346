"""Batches proposed through Replication/Propose are checked like public requests.

``validate.proposal`` decodes the batch and refuses anything the public API
would refuse (naming the command, the field, the value and the limit), node
ids outside the cluster, and Checkpoints. What it accepts, every replica
applies without a refusal.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.commands import MEMBERS, checkpoint, enqueue, lease, nack, reassign, refs

from dpq.paxos.types import Proposal
from dpq.queue import validate
from dpq.queue.commands import batch_of, stamp
from dpq.queue.state import QueueState
from dpq.queue.validate import DEFAULT_LIMITS, InvalidArgument
from dpq.v1 import log_pb2, queue_pb2


def check(*commands):
    return validate.proposal(batch_of(*commands), DEFAULT_LIMITS, MEMBERS)


def refused(*commands) -> str:
    with pytest.raises(InvalidArgument) as err:
        check(*commands)
    return str(err.value)


def test_a_valid_batch_comes_back_decoded_with_its_kinds():
    batch = check(enqueue((1, b"a"), owners=[2]), lease(1, node=3), nack((1, 1), delay_ms=5),
                  reassign([1], [1]))
    assert validate.kinds(batch) == ["enqueue", "lease", "nack", "reassign"]
    assert batch.commands[0].enqueue.owners == [2]


@pytest.mark.parametrize("data", [b"junk", b"\xff\xff\xff\xff", b"\x0a\x05\x0a"])
def test_bytes_that_do_not_decode_are_refused(data):
    with pytest.raises(InvalidArgument, match=r"^batch: \d+ bytes that do not decode as a "
                                              r"dpq.v1.CommandBatch$"):
        validate.proposal(data, DEFAULT_LIMITS, MEMBERS)


def test_a_job_the_public_api_refuses_is_refused_here_too():
    big = queue_pb2.NewJob(queue="q", priority=1, payload=bytes(3 << 20))
    assert refused(enqueue(big)) == (
        "commands[0].enqueue.jobs[0].payload: 3145728 bytes is over the limit of 1048576 bytes")
    newline = queue_pb2.NewJob(queue="a\nb", priority=1)
    assert refused(enqueue((1, b"ok")), enqueue(newline)) == (
        "commands[1].enqueue.jobs[0].queue: 'a\\nb' has characters outside letters, digits "
        "and _ . : -")
    assert refused(enqueue((0, b"x"))).startswith(
        "commands[0].enqueue.jobs[0].priority: 0 is outside 1..5")


@pytest.mark.parametrize("command, message", [
    (checkpoint(1), "commands[0]: a checkpoint command is not accepted from another process"),
    (log_pb2.Command(), "commands[0]: no command is not accepted from another process"),
    (enqueue((1, b"a"), (1, b"b"), owners=[1]),
     "commands[0].enqueue.owners: 1 given for 2 jobs; give one per item"),
    (enqueue((1, b"a"), owners=[4]),
     "commands[0].enqueue.owners[0]: node 4 is not a member of the cluster [1, 2, 3]"),
    (lease(1, node=9), "commands[0].lease.node: node 9 is not a member of the cluster [1, 2, 3]"),
    (lease(1, receipts=[]), "commands[0].lease.receipts: 0 given for 1 job ids; give one per item"),
    (lease(1, receipts=[0]),
     "commands[0].lease.receipts[0]: 0 is not a receipt (draw 64 random bits)"),
    (lease(1, lease_ms=0),
     "commands[0].lease.lease_ms: 0 is below the minimum of 1 ms (at most 43200000 ms)"),
    (lease(*range(1, 1002)),
     "commands[0].lease.job_ids: 1001 job ids is over the limit of 1000 job ids"),
    (nack((1, 0)),
     ("commands[0].nack.jobs[0].attempt: 0 is not a lease; quote the attempt the job was "
      "delivered with")),
    (nack((1, 1), max_attempts=2**32 - 1),
     "commands[0].nack.max_attempts: 4294967295 attempts is over the limit of 1000000 attempts"),
    (log_pb2.Command(ack=log_pb2.AckCommand()),
     "commands[0].ack.jobs: no job references; send at least one"),
    (reassign([1, 0], [1, 1]),
     "commands[0].reassign.job_ids[1]: 0 is not a job id (ids start at 1)"),
    (reassign([1], [5]),
     "commands[0].reassign.owners[0]: node 5 is not a member of the cluster [1, 2, 3]"),
])
def test_each_field_is_named_with_its_value_and_limit(command, message):
    assert refused(command) == message


def test_an_empty_batch_is_refused():
    with pytest.raises(InvalidArgument, match="batch: no commands"):
        validate.proposal(b"", DEFAULT_LIMITS, MEMBERS)


# What the validator accepts, the state machine applies without refusing it.
# Fields are mostly valid, sometimes just past a limit.
def mostly(valid: list, invalid: list):
    return st.sampled_from(valid * 3 + invalid)


DAY_MS = 24 * 3600 * 1000
job = st.builds(
    lambda q, p, n, d, k: queue_pb2.NewJob(queue=q, priority=p, payload=bytes(n), delay_ms=d,
                                           dedup_key=k),
    mostly(["", "q", "a.b:c-d_e", "x" * 128], ["x" * 129, "bad name"]),
    mostly([1, 3, 5], [0, 6]), mostly([0, 10, 1 << 20], [(1 << 20) + 1]),
    mostly([0, 30 * DAY_MS], [30 * DAY_MS + 1]), mostly(["", "k", "k" * 256], ["k" * 257]),
)
node = mostly([1, 2, 3], [0, 4])
ids = st.lists(mostly([1, 2, 3], [0]), min_size=1, max_size=3)
ref_pairs = st.lists(st.tuples(mostly([1, 2, 3], [0]), mostly([1, 2], [0])), min_size=1,
                     max_size=3)
command = st.one_of(
    st.builds(lambda jobs, owner, window: log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
        jobs=jobs, owners=[owner] * len(jobs), dedup_window_us=window)),
        st.lists(job, min_size=1, max_size=3), node, mostly([0, 10**6], [2**64 - 1])),
    st.builds(lambda ids, n, ms, c: lease(*ids, node=n, lease_ms=ms, consumer=c),
              ids, node, mostly([1, 12 * 3600 * 1000], [0, 12 * 3600 * 1000 + 1]),
              mostly(["", "c" * 256], ["c" * 257])),
    st.builds(lambda pairs, d, m: nack(*pairs, delay_ms=d, max_attempts=m), ref_pairs,
              mostly([0, 30 * DAY_MS], [2**32 - 1]), mostly([0, 5], [2**32 - 1])),
    st.builds(lambda ids, owner: reassign(ids, [owner] * len(ids)), ids, node),
    st.builds(lambda pairs, ms: log_pb2.Command(extend=log_pb2.ExtendCommand(
        jobs=refs(*pairs), lease_ms=ms)), ref_pairs, mostly([1, 12 * 3600 * 1000], [0, 2**32 - 1])),
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.lists(command, min_size=1, max_size=3))
def test_what_the_validator_accepts_every_replica_applies(commands):
    data = batch_of(*commands)
    try:
        validate.proposal(data, DEFAULT_LIMITS, MEMBERS)
    except InvalidArgument:
        return
    state = QueueState(members=MEMBERS)
    state.apply(1, Proposal("c1", 1, stamp(10**15, data)))
    assert state.refusals == []
