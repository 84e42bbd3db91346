"""The attacks of issue 10 on the peer port of a TLS cluster (``--tls-dir``):
real ``dpq-node`` processes, and an attacker with a plain gRPC client, the
generated stubs, the cluster id (read from a node's ``identity.json``, the
strongest insider short of a node's private key) and whatever certificate it
can get: none, one of another CA, the cluster's client certificate, the
gateway's, or another node's.

Without a certificate signed by the cluster CA the peer port cannot be opened
at all (the TLS handshake fails: UNAVAILABLE); a client certificate reaches no
Replication method; the gateway's may propose only Enqueue and never Stream;
a node's may not speak for another node. After every attempt: no node died,
the leader still commits, the jobs are intact and no forged ballot was taken.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import grpc
import pytest
from support.attacks import (
    LEADER_S,
    alive,
    ballot_of,
    batch,
    commit_of,
    drain,
    enqueue,
    healthy,
    paxos_batch,
    peer_stub,
    propose,
    rpc_error,
    stream,
)
from support.cluster import Cluster, wait_until

from dpq.security import certs
from dpq.security.identity import Identity
from dpq.v1 import log_pb2, queue_pb2, replication_pb2

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

pb = replication_pb2
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database):
    root = tmp_path_factory.mktemp("attacks-tls")
    with Cluster(root, pg_database("attacks_tls"), tls=True,
                 args=("--dead-after-ms", "1500")) as c:
        try:
            c.wait_leader(LEADER_S)
            wait_until(lambda: all(n.reachable for i in c.ids for n in c.info(i).nodes),
                       LEADER_S, "every node reachable")
        except Exception:
            for i in c.ids:
                print(f"--- node {i}\n{c.log_tail(i)}")
            raise
        yield c


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory) -> Path:
    """Another cluster's material: another CA, the same names."""
    folder = tmp_path_factory.mktemp("other-ca") / "tls"
    certs.init(folder, 3)
    return folder


def credentials(cluster: Cluster, holder: Identity | None, folder: Path | None = None
                ) -> grpc.ChannelCredentials:
    """TLS that trusts the cluster's CA (public: any handshake shows it) and presents
    ``holder``'s certificate from ``folder`` (the cluster's by default), or none."""
    ours = Path(cluster.tls_dir)
    ca = (ours / certs.CA_FILE).read_bytes()
    if holder is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    folder = folder or ours
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=(folder / certs.key_file(holder)).read_bytes(),
        certificate_chain=(folder / certs.cert_file(holder)).read_bytes())


def forged_traffic(cluster: Cluster, target: int, sender: int, cid: str, job_ids: list[int]):
    """Every forged peer call of the issue, aimed at ``target`` as node ``sender``:
    ``(name, call on a stub)`` pairs."""
    leader_round = max(ballot_of(cluster, i)[0] for i in cluster.ids)
    slot = commit_of(cluster, target) + 1
    receipts = [secrets.randbits(64) | 1 for _ in job_ids]
    lease_ack = batch(
        *(log_pb2.Command(lease=log_pb2.LeaseCommand(node=n, job_ids=job_ids, lease_ms=60_000,
                                                     receipts=receipts)) for n in (1, 2, 3)),
        log_pb2.Command(ack=log_pb2.AckCommand(jobs=[
            queue_pb2.JobRef(job_id=j, attempt=1, receipt=r) for j, r in zip(job_ids, receipts)])))
    checkpoint = batch(log_pb2.Command(checkpoint=log_pb2.CheckpointCommand(written_slot=2**63)))

    def message(**kind) -> pb.PeerBatch:
        return paxos_batch(cid, sender, pb.PaxosMessage(src=sender, dst=target, **kind))

    ballot = pb.Ballot(round=leader_round + 1000, node=sender)
    return [
        ("propose lease+ack", lambda stub: propose(stub, lease_ack, cluster=cid)),
        ("propose junk batch", lambda stub: propose(stub, b"junk", cluster=cid)),
        ("propose seq 2**63", lambda stub: propose(stub, lease_ack, cluster=cid, seq=2**63)),
        ("propose checkpoint 2**63", lambda stub: propose(stub, checkpoint, cluster=cid)),
        ("prepare round 2**63", lambda stub: stream(stub, [message(prepare=pb.Prepare(
            ballot=pb.Ballot(round=2**63, node=sender)))])),
        ("prepare round +1000", lambda stub: stream(stub, [message(prepare=pb.Prepare(
            ballot=ballot, from_slot=1))])),
        ("junk snapshot", lambda stub: stream(stub, [message(
            install_snapshot=pb.InstallSnapshot(ballot=ballot, commit=slot + 1000,
                                                snapshot=pb.PaxosSnapshot(slot=slot + 1000,
                                                                          data=b"junk")))])),
        ("forged accept", lambda stub: stream(stub, [message(accept=pb.Accept(
            ballot=ballot, first_slot=slot, commit=slot,
            proposals=[pb.PaxosProposal(client_id="forger", seq=1, data=b"junk")]))])),
        ("hello", lambda stub: stream(stub, [paxos_batch(cid, sender)])),
    ]


def untouched(cluster: Cluster, queue: str, jobs: dict[int, bytes], rounds: dict) -> None:
    """Nothing forged was taken (no node's ballot reached a forged round: +1000 or
    2**63; an honest election moves a round by one), and the cluster is healthy."""
    alive(cluster)
    forged = max(r for r, _ in rounds.values()) + 1000
    assert all(ballot_of(cluster, i)[0] < forged for i in cluster.ids), rounds
    healthy(cluster, queue, jobs)


def test_1c_without_a_cluster_certificate_the_peer_port_cannot_be_opened(cluster, other_ca):
    """Attacks 1 (c), 2-6 and 8 with TLS on: a client without a certificate of the
    cluster CA (plaintext, TLS without a certificate, another CA's node and gateway
    certificates) cannot open the peer port at all, even holding the cluster id:
    every forged Propose and Stream of the issue fails the handshake
    (UNAVAILABLE)."""
    queue = "attack1c"
    jobs = enqueue(cluster, queue)
    leader = cluster.wait_leader(LEADER_S)
    target = next(i for i in cluster.ids if i != leader)
    cid = cluster.cluster_id(target)
    rounds = {i: ballot_of(cluster, i) for i in cluster.ids}
    outsiders = {
        "plaintext": None,
        "TLS without a certificate": credentials(cluster, None),
        "another CA's node 1": credentials(cluster, Identity("node", 1), other_ca),
        "another CA's gateway": credentials(cluster, Identity("gateway"), other_ca),
    }
    for who, creds in outsiders.items():
        for node in (leader, target):
            channel, stub = peer_stub(cluster, node, creds)
            with channel:
                for what, call in forged_traffic(cluster, node, leader if node == target
                                                 else target, cid, sorted(jobs)):
                    error = rpc_error(call, stub)
                    assert error.code() == UNAVAILABLE, (who, what, error.code(),
                                                         error.details())
    untouched(cluster, queue, jobs, rounds)
    drain(cluster, queue, jobs)


def test_1c_a_client_or_gateway_certificate_cannot_propose_more_than_enqueue(cluster):
    """Attack 1 (c) and the forged peer messages of attacks 2-6 and 8 with the
    cluster's own client certificate (every client may have one) and with the
    gateway's, each with the cluster id: the client certificate reaches no
    Replication method; the gateway's may not Stream, and its proposals may only
    enqueue (the Lease + Ack batch is refused whole); junk, seq 2**63 and the
    checkpoint are refused before anything is proposed."""
    queue = "attack1c-certs"
    jobs = enqueue(cluster, queue)
    leader = cluster.wait_leader(LEADER_S)
    cid = cluster.cluster_id(leader)
    rounds = {i: ballot_of(cluster, i) for i in cluster.ids}
    sender = next(i for i in cluster.ids if i != leader)
    expected = {  # what the gateway certificate gets, by call
        "propose lease+ack": (DENIED, "only enqueue"),
        "propose junk batch": (grpc.StatusCode.INVALID_ARGUMENT, "CommandBatch"),
        "propose seq 2**63": (grpc.StatusCode.INVALID_ARGUMENT, f"seq: {2**63}"),
        "propose checkpoint 2**63": (DENIED, "only enqueue"),
    }
    for holder in (Identity("client"), Identity("gateway")):
        channel, stub = peer_stub(cluster, leader, credentials(cluster, holder))
        with channel:
            for what, call in forged_traffic(cluster, leader, sender, cid, sorted(jobs)):
                error = rpc_error(call, stub)
                if holder.role == "client":
                    code, text = DENIED, "not client"
                else:
                    code, text = expected.get(what, (DENIED, "for node certificates"))
                assert (error.code(), text in (error.details() or "")) == (code, True), \
                    (holder.role, what, error.code(), error.details())
    untouched(cluster, queue, jobs, rounds)
    drain(cluster, queue, jobs)


def test_6_a_node_certificate_cannot_speak_for_another_node(cluster):
    """Attacks 3, 5 and 6 with TLS on, by the strongest outsider short of the
    leader's own key: node 3's certificate and the cluster id, forging the
    leader's Prepare, junk snapshot and Accept to a follower (sender and src the
    leader). Every batch is refused (PERMISSION_DENIED naming both nodes) before
    anything in it is looked at; no ballot moves. Its Lease + Ack batch leases for
    every node and is refused whole: a node's key leases only its own jobs."""
    queue = "attack6-tls"
    jobs = enqueue(cluster, queue)
    leader = cluster.wait_leader(LEADER_S)
    target, holder = [i for i in cluster.ids if i != leader]
    cid = cluster.cluster_id(target)
    rounds = {i: ballot_of(cluster, i) for i in cluster.ids}
    channel, stub = peer_stub(cluster, target, credentials(cluster, Identity("node", holder)))
    with channel:
        for what, call in forged_traffic(cluster, target, leader, cid, sorted(jobs)):
            error = rpc_error(call, stub)
            if what == "propose lease+ack":  # leases for every node: only its own are its to take
                assert error.code() == DENIED, (what, error.code(), error.details())
                assert f"the certificate is node {holder}'s" in error.details(), error.details()
                continue
            if what.startswith("propose"):  # checked like any node's proposal
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, error.details())
                continue
            assert error.code() == DENIED, (what, error.code(), error.details())
            assert f"node {leader}" in error.details() and f"node {holder}" in \
                error.details(), (what, error.details())
    untouched(cluster, queue, jobs, rounds)
    drain(cluster, queue, jobs)
