"""The attacks of issue 10 ("Trust boundary"), replayed from outside against a
real 3-node ``--insecure`` cluster with nothing but a plain gRPC client and
the generated stubs (``dpq.v1.*_pb2``).

Each test names the attack it replays, enqueues its own jobs in its own queue
first, attacks, and then checks that nobody died, that the leader still
commits (a fresh Enqueue + Dequeue + Ack round), that the jobs enqueued before
are intact on every node, and where the attack once left a node that could not
start again, that every node restarts. The TLS parts are in
test_attacks_tls.py.

The attacker is of two kinds: an outsider on the network, and an insider who
read the cluster id from a node's ``identity.json``. In ``--insecure`` mode the
cluster id is the only secret between an insider and the node-to-node plane,
so an insider can do what a node can do (see test 1b and test 6); what these
tests hold even against an insider is that nothing it sends can stop a node,
make a node unable to restart, or make replicas disagree about a committed
slot they both applied.
"""

from __future__ import annotations

import re
import secrets
import struct
import threading
import time

import grpc
import psycopg
import pytest
from support.attacks import (
    LEADER_S,
    RPC_S,
    ack,
    agreed_stats,
    alive,
    ballot_of,
    batch,
    commit_of,
    commits,
    counter,
    dequeue_all,
    drain,
    enqueue,
    forged_accept,
    healthy,
    intact,
    log_text,
    paxos_batch,
    peer_stub,
    propose,
    restart,
    rpc_error,
    stream,
)
from support.cluster import Cluster, wait_until

from dpq.v1 import log_pb2, queue_pb2, replication_pb2

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

pb = replication_pb2
MIB = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database):
    root = tmp_path_factory.mktemp("attacks")
    with Cluster(root, pg_database("attacks"), args=("--dead-after-ms", "1500")) as c:
        try:
            c.wait_leader(LEADER_S)
            wait_until(lambda: all(n.reachable and n.address for i in c.ids
                                   for n in c.info(i).nodes), LEADER_S, "every node reachable")
        except Exception:
            for i in c.ids:
                print(f"--- node {i}\n{c.log_tail(i)}")
            raise
        yield c


@pytest.fixture
def ours(cluster) -> str:
    return cluster.cluster_id(2)


def followers(cluster: Cluster, leader: int) -> list[int]:
    return [i for i in cluster.ids if i != leader]


def stamped(data: bytes, now_us: int | None = None) -> bytes:
    """Proposal data as a leader stamps it: 8 bytes of little-endian microseconds + batch."""
    return struct.pack("<q", now_us if now_us is not None else time.time_ns() // 1000) + data


def new_job(queue: str, payload: bytes = b"x") -> queue_pb2.NewJob:
    return queue_pb2.NewJob(queue=queue, priority=1, payload=payload)


def invalid_enqueues(queue: str) -> list[log_pb2.Command]:
    """Jobs the public API refuses: a 3 MiB payload, a queue name with a newline."""
    return [log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
                jobs=[new_job(queue, b"\0" * (3 * MIB))], owners=[1])),
            log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
                jobs=[new_job(f"{queue}\nevil")], owners=[1]))]


def lease_and_ack_everything(job_ids: list[int]) -> tuple[list[log_pb2.Command], dict[int, int]]:
    """The forged batch of attack 1: a Lease of every job id for every node (the
    forger does not know the owners) and an Ack of every job at attempt 1 with
    the receipts the forger drew for its own leases."""
    receipts = {j: secrets.randbits(64) | 1 for j in job_ids}
    leases = [log_pb2.Command(lease=log_pb2.LeaseCommand(
        node=node, job_ids=job_ids, lease_ms=60_000, consumer_id="forger",
        receipts=[receipts[j] for j in job_ids])) for node in (1, 2, 3)]
    acks = log_pb2.Command(ack=log_pb2.AckCommand(jobs=[
        queue_pb2.JobRef(job_id=j, attempt=1, receipt=receipts[j]) for j in job_ids]))
    return [*leases, acks], receipts


def hold_one(cluster: Cluster, queue: str) -> queue_pb2.Job:
    """A real consumer leases one job of ``queue``."""
    [job] = dequeue_all(cluster, queue, 1, consumer="honest")
    return job


# ----------------------------------------------------------------- attack 1

def test_1a_forged_lease_and_ack_without_the_cluster_id_is_refused(cluster):
    """Attack 1 (a): one Replication/Propose to the leader with a Lease of every job
    id and an Ack at attempt 1, plus jobs the public API refuses (3 MiB payload,
    a queue name with a newline), sent by an outsider (no cluster id): refused
    with PERMISSION_DENIED, nothing changes; the invalid jobs alone (which a
    gateway may propose) are INVALID_ARGUMENT."""
    queue = "attack1a"
    jobs = enqueue(cluster, queue)
    held = hold_one(cluster, queue)
    leader = cluster.wait_leader(LEADER_S)
    forged, _ = lease_and_ack_everything(sorted(jobs))
    channel, stub = peer_stub(cluster, leader)
    with channel:
        for commands in (forged, [*forged, *invalid_enqueues(queue)], forged[-1:]):
            error = rpc_error(propose, stub, batch(*commands))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
            assert "only enqueue" in error.details()
        for command, field in zip(invalid_enqueues(queue), ("payload", "queue")):
            error = rpc_error(propose, stub, batch(command))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert f"commands[0].enqueue.jobs[0].{field}" in error.details()
    healthy(cluster, queue, jobs, leased=1)
    jobs.pop(held.job_id)
    ack(cluster, [held])  # the consumer's lease stood
    drain(cluster, queue, jobs)


def test_1b_an_insider_with_the_cluster_id_settles_only_leases_it_drew_itself(cluster, ours):
    """Attack 1 (b): the same forged Lease + Ack batch from an insider who read the
    cluster id from a node's identity.json.

    With the invalid jobs in it the whole batch is INVALID_ARGUMENT and nothing
    of it is applied. Without them it is a valid node proposal, and in
    --insecure mode an insider holding the cluster id has a node's powers: its
    Lease takes every READY job (with receipts it drew itself) and its Ack then
    settles those leases, so it CAN delete every ready job (only mutual TLS,
    where a proposal needs a node certificate, closes that). What still holds:
    an Ack works only for the leases the forger got in that batch; a job a real
    consumer holds is refused per item with lease_lost and stays with its
    consumer, whose Ack (with its receipt) succeeds; every node applies the
    same and agrees."""
    queue = "attack1b"
    jobs = enqueue(cluster, queue)
    held = hold_one(cluster, queue)
    leader = cluster.wait_leader(LEADER_S)
    forged, receipts = lease_and_ack_everything(sorted(jobs))
    channel, stub = peer_stub(cluster, leader)
    with channel:
        for bad in invalid_enqueues(queue):
            error = rpc_error(propose, stub, batch(*forged, bad), cluster=ours)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert "commands[4].enqueue.jobs[0]" in error.details()
        intact(cluster, queue, jobs, leased=1)  # nothing of those batches was applied

        response = propose(stub, batch(*forged), cluster=ours)
    granted = {j.job_id: j for r in response.results[:3] for j in r.jobs}
    assert held.job_id not in granted and set(granted) == set(jobs) - {held.job_id}
    assert all(j.receipt == receipts[j.job_id] and j.attempt == 1 for j in granted.values())
    acked = dict(zip(sorted(jobs), response.results[3].errors))
    assert acked == {j: ("" if j in granted else "lease_lost") for j in jobs}
    # The consumer still holds its job, on every node.
    assert agreed_stats(cluster, queue) == ((0,) * 5, 0, 1, 0)
    healthy(cluster, queue, {held.job_id: jobs[held.job_id]}, leased=1)
    ack(cluster, [held])
    assert agreed_stats(cluster, queue) == ((0,) * 5, 0, 0, 0)


# ----------------------------------------------------------------- attack 2

JUNK_BATCHES = (b"junk", b"\xff\xff\xff\xff", b"\x01\x02\x03\x04")


def test_2_a_junk_batch_is_refused_never_committed_and_every_node_restarts(cluster, ours):
    """Attack 2: Propose whose batch is 4 junk bytes (it was committed, every node
    died applying it and again on every restart): INVALID_ARGUMENT with or
    without the cluster id, never committed; every node keeps running and
    restarts."""
    queue = "attack2"
    jobs = enqueue(cluster, queue)
    leader = cluster.wait_leader(LEADER_S)
    client = f"junk-{secrets.token_hex(4)}"
    channel, stub = peer_stub(cluster, leader)
    with channel:
        for seq, data in enumerate(JUNK_BATCHES, 1):
            for cid in ("", ours):
                error = rpc_error(propose, stub, data, cluster=cid, seq=seq, client_id=client)
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
                assert "CommandBatch" in error.details()
    healthy(cluster, queue, jobs)
    restart(cluster)
    healthy(cluster, queue, jobs)
    # never in any log: the applier would have logged its refusal naming the client
    assert not [i for i in cluster.ids if client in log_text(cluster, i)]
    drain(cluster, queue, jobs)


# ----------------------------------------------------------------- attack 3

def test_3_a_prepare_of_round_2_63_to_every_node_kills_nobody(cluster, ours):
    """Attack 3: one Prepare per node with ballot round 2**63 (a PeerBatch on
    Replication/Stream), which killed all three (cannot encode HardState): without
    the cluster id the stream is refused; with it the message is dropped at the
    edge. No node dies, no node took the ballot, a restart of all nodes works."""
    queue = "attack3"
    jobs = enqueue(cluster, queue)
    dropped = {i: counter(cluster, i, "peers.dropped_messages") for i in cluster.ids}
    for target in cluster.ids:
        src = target % 3 + 1  # another member: messages from the sender only
        channel, stub = peer_stub(cluster, target)
        with channel:
            for rnd in (2**63, 2**64 - 1):
                prepare = pb.PaxosMessage(src=src, dst=target, prepare=pb.Prepare(
                    ballot=pb.Ballot(round=rnd, node=src), from_slot=1))
                error = rpc_error(stream, stub, [paxos_batch("", src, prepare)])
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
                stream(stub, [paxos_batch(ours, src, prepare)])  # taken, then dropped
    for i in cluster.ids:
        assert counter(cluster, i, "peers.dropped_messages") >= dropped[i] + 2
        assert ballot_of(cluster, i)[0] < 2**62
        assert "prepare.ballot.round: 9223372036854775808 is over the limit" in \
            log_text(cluster, i)
    healthy(cluster, queue, jobs)
    restart(cluster)
    healthy(cluster, queue, jobs)
    drain(cluster, queue, jobs)


# ----------------------------------------------------------------- attack 4

def test_4_a_propose_with_seq_2_63_is_invalid_argument_and_the_leader_lives(cluster, ours):
    """Attack 4: Propose with seq 2**63 (with the cluster id), which killed the
    leader, and the next one too: INVALID_ARGUMENT naming the seq; the leader
    is alive and the next proposals commit."""
    queue = "attack4"
    jobs = enqueue(cluster, queue)
    leader = cluster.wait_leader(LEADER_S)
    enqueue_one = batch(log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
        jobs=[new_job(queue, b"seq 2**63")], owners=[leader])))
    channel, stub = peer_stub(cluster, leader)
    with channel:
        for seq in (2**63, 2**63, 2**64 - 1):  # twice: it once killed the next leader too
            for cid in (ours, ""):
                error = rpc_error(propose, stub, enqueue_one, cluster=cid, seq=seq)
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
                assert f"seq: {seq} is over the limit" in error.details()
        alive(cluster)
        assert cluster.wait_leader(LEADER_S) == leader
        # the next proposal of the same insider is fine
        response = propose(stub, enqueue_one, cluster=ours, seq=1)
    [[job_id]] = [list(r.job_ids) for r in response.results]
    jobs[job_id] = b"seq 2**63"
    healthy(cluster, queue, jobs)
    drain(cluster, queue, jobs)


# ----------------------------------------------------------------- attack 5

def test_5_a_junk_snapshot_is_dropped_and_the_follower_restarts(cluster, ours):
    """Attack 5: a forged InstallSnapshot with 4 junk bytes to a follower (with the
    cluster id and the leader as sender and src), which killed the follower and
    made it crash-loop (it was saved before it was decoded): dropped before
    anything is saved; the follower keeps running and restarts."""
    queue = "attack5"
    jobs = enqueue(cluster, queue)
    leader = cluster.wait_leader(LEADER_S)
    target = followers(cluster, leader)[0]
    rnd, _ = ballot_of(cluster, target)
    slot = commit_of(cluster, target) + 1000
    for ballot in (pb.Ballot(round=rnd, node=leader), pb.Ballot(round=rnd + 1000, node=leader)):
        snapshot = pb.PaxosMessage(src=leader, dst=target, install_snapshot=pb.InstallSnapshot(
            ballot=ballot, snapshot=pb.PaxosSnapshot(slot=slot, data=b"junk"), commit=slot))
        channel, stub = peer_stub(cluster, target)
        with channel:
            stream(stub, [paxos_batch(ours, leader, snapshot)])
    wait_until(lambda: "its snapshot at slot" in log_text(cluster, target), 20,
               "the follower to log the dropped snapshot")
    assert f"dropped a InstallSnapshot from node {leader}: its snapshot at slot {slot} does " \
           "not load" in log_text(cluster, target)
    assert commit_of(cluster, target) < slot and ballot_of(cluster, target)[0] < rnd + 1000
    healthy(cluster, queue, jobs)
    restart(cluster, [target])
    healthy(cluster, queue, jobs)
    drain(cluster, queue, jobs)


# ----------------------------------------------------------------- attack 6

def test_6_a_forged_accept_to_a_follower_is_a_no_op_everywhere_and_kills_nobody(cluster, ours):
    """Attack 6: a forged Accept (ballot +1000, the next slot) sent to one follower,
    which got committed on all three nodes. Without the cluster id (or with a
    wrong one) the stream is refused and nothing is taken. With it, an insider
    in --insecure mode speaks for the leader (that is all the cluster id
    proves), and whatever it carries must not kill anyone: here the leader
    then stops, so the next leader must finish the slot with the junk (Paxos:
    the value accepted at the highest ballot), and every replica applies it as
    the same deterministic no-op, logged once, and holds the same jobs.

    Not covered, because it is not true: an insider that forges the leader's
    Accept at its current ballot, or claims a commit, while the real leader
    keeps proposing can make that one follower apply another value for a slot
    than the others (it diverges silently). Only mutual TLS, where every batch's
    sender must be the node its certificate names, prevents that
    (test_attacks_tls.py)."""
    queue = "attack6"
    jobs = enqueue(cluster, queue)
    leader = cluster.wait_leader(LEADER_S)
    target = followers(cluster, leader)[0]
    client = f"accept-{secrets.token_hex(4)}"
    rnd = max(ballot_of(cluster, i)[0] for i in cluster.ids) + 1000
    accept = pb.PaxosMessage(src=leader, dst=target, accept=pb.Accept(
        ballot=pb.Ballot(round=rnd, node=leader), first_slot=commit_of(cluster, target) + 1,
        proposals=[pb.PaxosProposal(client_id=client, seq=1, data=b"junk")]))
    channel, stub = peer_stub(cluster, target)
    with channel:
        for cid in ("", secrets.token_hex(16)):
            error = rpc_error(stream, stub, [paxos_batch(cid, leader, accept)])
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
    assert ballot_of(cluster, target)[0] < rnd  # nothing of it was taken

    slot, rnd = forged_accept(cluster, ours, leader, [target], b"junk", claim_commit=False,
                              client=client)
    assert ballot_of(cluster, target) == (rnd, leader)  # taken as from the leader
    cluster.stop(leader)
    line = f"slot {slot}: the whole batch of proposal {client!r} seq 1 refused, nothing changed"
    wait_until(lambda: all(line in log_text(cluster, i) for i in cluster.procs), LEADER_S,
               "the next leader to commit the junk slot")
    alive(cluster)
    cluster.start(leader)
    wait_until(lambda: line in log_text(cluster, leader), LEADER_S,
               "the old leader to apply the junk slot too")
    healthy(cluster, queue, jobs)
    jobs.update(enqueue(cluster, queue, 3))  # the leader's next commits
    intact(cluster, queue, jobs)
    restart(cluster)
    healthy(cluster, queue, jobs)
    drain(cluster, queue, jobs)
    for i in cluster.ids:  # one refusal per replica, not one per restart or per node
        assert log_text(cluster, i).count(line) >= 1


# ----------------------------------------------------------------- attack 7

def test_7_a_prepare_storm_does_not_stall_writes(cluster, ours):
    """Attack 7: a Prepare with a slightly higher round every 300 ms (20 of them,
    to every node, with the cluster id), which stalled all writes for as long as
    it ran, while a producer enqueues: a leader that hears from a quorum keeps
    its leadership (stickiness), so writes keep committing during the storm. A
    liveness bound, not a speed benchmark: most enqueues succeed and none takes
    longer than a generous deadline."""
    queue = "attack7"
    jobs = enqueue(cluster, queue)
    leader = cluster.wait_leader(LEADER_S)
    stop = threading.Event()
    outcomes: list[str] = []

    def produce() -> None:
        stub = cluster.stub(leader)
        while not stop.is_set() and len(outcomes) < 500:
            try:
                ids = stub.Enqueue(queue_pb2.EnqueueRequest(jobs=[new_job(queue, b"storm")]),
                                   timeout=10).job_ids
                outcomes.append("ok")
                jobs.update((i, b"storm") for i in ids)
            except grpc.RpcError as exc:
                outcomes.append(exc.code().name)
            time.sleep(0.05)

    producer = threading.Thread(target=produce, name="producer")
    producer.start()
    try:
        base = max(ballot_of(cluster, i)[0] for i in cluster.ids)
        channels = {i: peer_stub(cluster, i) for i in cluster.ids}

        def storm(target: int):
            src = target % 3 + 1
            for k in range(1, 21):
                yield paxos_batch(ours, src, pb.PaxosMessage(
                    src=src, dst=target, prepare=pb.Prepare(
                        ballot=pb.Ballot(round=base + k, node=src), from_slot=1)))
                time.sleep(0.3)

        streamed: list[object] = []

        def attack(stub, target: int) -> None:
            try:
                streamed.append(stream(stub, storm(target)))
            except grpc.RpcError as exc:  # the test must see it: a refused storm proves nothing
                streamed.append(exc)

        threads = [threading.Thread(target=attack, args=(stub, i))
                   for i, (_, stub) in channels.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        during = len(outcomes)
    finally:
        stop.set()
        producer.join(30)
        for channel, _ in channels.values():
            channel.close()
    assert [type(r) for r in streamed] == [pb.PeerAck] * 3, streamed  # every Prepare was taken
    failed = [o for o in outcomes if o != "ok"]
    print(f"during the storm: {during} enqueues, {len(failed)} failed: {set(failed)}")
    assert during >= 20, outcomes  # the producer ran through the storm
    assert "DEADLINE_EXCEEDED" not in failed, outcomes
    assert len(failed) <= len(outcomes) // 10, outcomes
    healthy(cluster, queue, jobs)
    drain(cluster, queue, jobs)


# ----------------------------------------------------------------- attack 8

def in_postgres(cluster: Cluster, queue: str) -> dict[int, bytes]:
    with psycopg.connect(cluster.dsn) as conn:
        rows = conn.execute("SELECT job_id, payload FROM jobs WHERE queue = %s",
                            (queue,)).fetchall()
    return {job_id: bytes(payload) for job_id, payload in rows}


def test_8_a_checkpoint_of_2_63_is_refused_at_the_edge_and_by_every_replica(cluster, ours):
    """Attack 8: a Checkpoint with written_slot = 2**63 would make every replica
    forget which changes PostgreSQL still needs. Proposed (with the cluster id):
    INVALID_ARGUMENT at the edge. Smuggled into the log by a forged Accept to a
    majority (so it is chosen): every replica refuses it in apply, and the jobs
    enqueued before and after it still reach PostgreSQL."""
    queue = "attack8"
    jobs = enqueue(cluster, queue)
    leader = cluster.wait_leader(LEADER_S)
    checkpoint = batch(log_pb2.Command(checkpoint=log_pb2.CheckpointCommand(written_slot=2**63)))
    channel, stub = peer_stub(cluster, leader)
    with channel:
        error = rpc_error(propose, stub, checkpoint, cluster=ours)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert "commands[0]: a checkpoint command is not accepted" in error.details()
        error = rpc_error(propose, stub, checkpoint)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()

    # Smuggled: an insider posing as a follower sends the other two an Accept of
    # it at a higher ballot and says it is committed; a majority holds it, so it
    # is chosen, and a new leader finishes it on the third node too.
    src = followers(cluster, leader)[0]
    client = f"checkpoint-{secrets.token_hex(4)}"
    slot, _ = forged_accept(cluster, ours, src, [i for i in cluster.ids if i != src],
                            stamped(checkpoint), claim_commit=True, client=client)
    line = (f"slot {slot}: command 0 (checkpoint) of proposal {client!r} seq 1 refused, nothing "
            f"changed: invalid: written_slot {2**63} is not below its own slot {slot}")
    wait_until(lambda: all(line in log_text(cluster, i) for i in cluster.ids), LEADER_S,
               "every replica to refuse the smuggled checkpoint")
    alive(cluster)
    later = enqueue(cluster, queue, 3)
    jobs.update(later)
    healthy(cluster, queue, jobs)
    wait_until(lambda: in_postgres(cluster, queue) == jobs, 60,
               "the jobs enqueued before and after to reach PostgreSQL")
    restart(cluster)
    healthy(cluster, queue, jobs)
    drain(cluster, queue, jobs)
    wait_until(lambda: in_postgres(cluster, queue) == {}, 60,
               "the acked jobs to leave PostgreSQL")


# ----------------------------------------------------------------- attack 9

METHODS = ("/dpq.v1.Queue/Enqueue", "/dpq.v1.Queue/Ack", "/dpq.v1.Queue/Dequeue",
           "/dpq.v1.Queue/Stats")


def test_9_a_body_that_does_not_parse_is_invalid_argument_naming_the_method(cluster):
    """Attack 9 (smaller): bodies that fail to parse got UNKNOWN with a Python class
    name in the details. They must not hurt the node (checked first), and must
    be INVALID_ARGUMENT with a message naming the method and no class name."""
    queue = "attack9"
    jobs = enqueue(cluster, queue, 2)
    errors = {}
    with grpc.insecure_channel(cluster.addresses[1]) as client, \
            grpc.insecure_channel(cluster.peer_addresses[1]) as peer:
        for method in METHODS:
            raw = client.unary_unary(method, request_serializer=None,
                                      response_deserializer=None)
            for junk in (b"\xff\xff\xff\xff", b"junk"):
                errors[method, junk] = rpc_error(raw, junk, timeout=RPC_S)
        raw = peer.unary_unary("/dpq.v1.Replication/Propose", request_serializer=None,
                               response_deserializer=None)
        errors["/dpq.v1.Replication/Propose", b"junk"] = rpc_error(raw, b"junk", timeout=RPC_S)
    healthy(cluster, queue, jobs)
    drain(cluster, queue, jobs)
    for (method, _), error in errors.items():
        details = error.details() or ""
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, error.code(), details)
        assert method.rsplit("/", 1)[1] in details, (method, details)
        assert not re.search(r"Error|Exception|Traceback|<class", details), (method, details)


# ---------------------------------------------------------------- attack 10

def test_10_a_lease_is_settled_only_by_whoever_got_it(cluster):
    """Attack 10 (smaller): any client could extend or ack another consumer's lease
    by guessing (job_id, attempt). Without the receipt (or with a guessed one),
    Ack, Nack and ExtendLease are refused per item with lease_lost; the jobs stay
    leased to their consumer, whose Ack with the receipts then succeeds."""
    queue = "attack10"
    jobs = enqueue(cluster, queue, 4)
    held = dequeue_all(cluster, queue, len(jobs), consumer="owner")
    assert all(j.receipt for j in held)
    stranger = cluster.stub(cluster.wait_leader(LEADER_S))
    for receipt in (None, "guess"):
        refs = [queue_pb2.JobRef(job_id=j.job_id, attempt=j.attempt,
                                 receipt=0 if receipt is None else secrets.randbits(64))
                for j in held]
        for call, request in (
                (stranger.Ack, queue_pb2.AckRequest(jobs=refs)),
                (stranger.ExtendLease, queue_pb2.ExtendLeaseRequest(jobs=refs, lease_ms=1)),
                (stranger.Nack, queue_pb2.NackRequest(jobs=refs))):
            results = call(request, timeout=RPC_S).results
            assert [(r.job_id, r.ok, r.error) for r in results] == \
                [(j.job_id, False, "lease_lost") for j in held], call
    intact(cluster, queue, jobs, leased=len(jobs))
    ack(cluster, held)
    assert agreed_stats(cluster, queue) == ((0,) * 5, 0, 0, 0)
    commits(cluster, queue)
    alive(cluster)
