"""A committed entry that cannot be applied does not stop a node, now or on restart.

The write-ahead log of a real single-node ``dpq-node`` is given committed
slots no state machine can use (bytes shorter than a stamp, a stamp with junk
after it, a Checkpoint far past its own slot, a Lease for a node that is not a
member). The node starts, logs one error line per bad slot naming it, serves
enqueues and dequeues, and does the same again after a restart.
"""

from __future__ import annotations

import grpc
import pytest
from support.cluster import Cluster, wait_until

from dpq.paxos.types import Ballot, Entry, HardState, Proposal
from dpq.paxos.wal import WriteAheadLog
from dpq.queue.commands import batch_of, stamp
from dpq.v1 import log_pb2, queue_pb2, replication_pb2, replication_pb2_grpc

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

NOW_US = 1_700_000_000 * 10**6

BAD_SLOTS = {
    1: b"junk",
    2: stamp(NOW_US, b"\xff\xff\xff\xff"),
    3: stamp(NOW_US, batch_of(log_pb2.Command(
        checkpoint=log_pb2.CheckpointCommand(written_slot=2**63)))),
    4: stamp(NOW_US, batch_of(log_pb2.Command(lease=log_pb2.LeaseCommand(
        node=7, job_ids=[1], lease_ms=1000, receipts=[1])))),
}
EXPECTED_LINES = {
    1: "slot 1: the whole batch of proposal 'intruder' seq 1 refused, nothing changed: "
       "unparsable: ValueError",
    2: "slot 2: the whole batch of proposal 'intruder' seq 2 refused, nothing changed: "
       "unparsable: DecodeError",
    3: "slot 3: command 0 (checkpoint) of proposal 'intruder' seq 3 refused, nothing changed: "
       f"invalid: written_slot {2**63} is not below its own slot 3",
    4: "slot 4: command 0 (lease) of proposal 'intruder' seq 4 refused, nothing changed: "
       "not_member: node 7",
}


@pytest.fixture
def node(tmp_path, pg_db):
    wal = WriteAheadLog.open(tmp_path / "n1" / "wal")
    ballot = Ballot(1, 1)
    wal.append_entries(Entry(slot, ballot, Proposal("intruder", slot, data))
                       for slot, data in BAD_SLOTS.items())
    wal.append_hard_state(HardState(ballot, commit=len(BAD_SLOTS)))
    wal.sync()
    wal.close()
    with Cluster(tmp_path, pg_db, nodes=1) as cluster:
        yield cluster


def serves(cluster: Cluster, queue: str) -> None:
    cluster.wait_leader(timeout_s=60)
    stub = cluster.stub(1)
    [job_id] = stub.Enqueue(queue_pb2.EnqueueRequest(
        jobs=[queue_pb2.NewJob(queue=queue, priority=1, payload=b"still here")]),
        timeout=15).job_ids
    [job] = stub.Dequeue(queue_pb2.DequeueRequest(queue=queue, max_jobs=1, wait_ms=5000,
                                                  lease_ms=30_000), timeout=20).jobs
    assert (job.job_id, job.payload) == (job_id, b"still here")
    ref = queue_pb2.JobRef(job_id=job.job_id, attempt=job.attempt, receipt=job.receipt)
    [result] = stub.Ack(queue_pb2.AckRequest(jobs=[ref]), timeout=15).results
    assert result.ok, result.error


def error_lines(cluster: Cluster) -> list[str]:
    path = cluster.root / "n1" / "logs" / "errors.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return [line for line in text.splitlines() if "[ERROR] dpq.node.applier:" in line]


def test_a_node_with_unappliable_entries_in_its_log_serves_and_restarts(node):
    serves(node, "first")
    lines = wait_until(lambda: len(error_lines(node)) >= len(BAD_SLOTS) and error_lines(node),
                       20, "the refusals to be logged")
    for slot, expected in EXPECTED_LINES.items():
        assert sum(expected in line for line in lines) == 1, (slot, lines)
    assert len(lines) == len(BAD_SLOTS)  # one line per bad slot, nothing else

    node.stop(1)
    assert not node.exited()
    node.start(1)
    serves(node, "second")
    # the entries may have been compacted into a snapshot; if not they are refused again
    assert all(any(e in line for e in EXPECTED_LINES.values()) for line in error_lines(node))


def test_a_junk_propose_is_refused_and_never_reaches_the_log(node):
    serves(node, "before")  # the bad slots are applied (and logged) by now
    with grpc.insecure_channel(node.peer_addresses[1]) as channel:
        stub = replication_pb2_grpc.ReplicationStub(channel)
        for batch, field in ((b"\x01\x02\x03\x04", "ProposeRequest.batch"),
                             (batch_of(log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
                                 jobs=[queue_pb2.NewJob(queue="a\nb", priority=1)], owners=[1]))),
                              "commands[0].enqueue.jobs[0].queue")):
            request = replication_pb2.ProposeRequest(client_id="intruder", seq=9, batch=batch)
            with pytest.raises(grpc.RpcError) as err:
                stub.Propose(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith(f"Replication/Propose: {field}")
            # the same on a stream, answered alone
            [answer] = stub.ProposeStream(iter([request]), timeout=10)
            assert (answer.error_code, answer.error) == (
                grpc.StatusCode.INVALID_ARGUMENT.value[0], err.value.details())
    serves(node, "after")  # anything proposed before is applied by now
    assert not [line for line in error_lines(node) if "'intruder' seq 9" in line]
    assert node.stub(1).Stats(queue_pb2.StatsRequest(), timeout=10).queues == []
