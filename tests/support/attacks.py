"""What the attack tests share: forging peer traffic with nothing but the
generated stubs, and the checks that a cluster survived (nobody died, the
leader still commits, the jobs enqueued before are intact).

Nothing here uses dpq's own client or node code: the attacker has the .proto
files (``dpq.v1.*_pb2``), a plain gRPC channel and, as an insider in
``--insecure`` mode, the cluster id read from a node's ``identity.json``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable

import grpc
from support.cluster import Cluster, wait_until

from dpq.v1 import log_pb2, queue_pb2, replication_pb2, replication_pb2_grpc

pb = replication_pb2

#: Generous: real processes on a 2-core machine shared with other test runs.
RPC_S = 15
LEADER_S = 60


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    """The error ``call`` must end with (an AssertionError if it succeeds)."""
    try:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):  # a response stream: its first answer
            next(result)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"{call} succeeded; it must be refused")


# ------------------------------------------------------------------- forging

def peer_stub(cluster: Cluster, node_id: int,
              credentials: grpc.ChannelCredentials | None = None):
    """``(channel, stub)`` to a node's peer port: plaintext, or with ``credentials``."""
    address = cluster.peer_addresses[node_id]
    channel = (grpc.insecure_channel(address) if credentials is None
               else grpc.secure_channel(address, credentials))
    return channel, replication_pb2_grpc.ReplicationStub(channel)


def batch(*commands: log_pb2.Command) -> bytes:
    return log_pb2.CommandBatch(commands=list(commands)).SerializeToString()


def propose(stub, data: bytes, *, cluster: str = "", seq: int = 1,
            client_id: str | None = None) -> replication_pb2.ProposeResponse:
    """A forged Propose. When it is refused, the same request on a ProposeStream must be
    refused with the same status and message (the stream ended, or the proposal
    answered alone), so every attack tries both ways in."""
    request = replication_pb2.ProposeRequest(
        client_id=client_id or f"forger-{secrets.token_hex(4)}", seq=seq, batch=data,
        cluster_id=cluster)
    try:
        return stub.Propose(request, timeout=RPC_S)
    except grpc.RpcError as exc:
        assert streamed_refusal(stub, request) == (exc.code(), exc.details())
        raise


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def streamed_refusal(stub, request: replication_pb2.ProposeRequest) -> tuple:
    """``(code, details)`` of ``request`` refused on a ProposeStream of its own."""
    try:
        [answer] = stub.ProposeStream(iter([request]), timeout=RPC_S)
    except grpc.RpcError as exc:
        # an interceptor's refusal names the method it refused
        return exc.code(), exc.details().replace("Replication/ProposeStream",
                                                 "Replication/Propose")
    return _CODES[answer.error_code], answer.error


def ballot_of(cluster: Cluster, node_id: int) -> tuple[int, int]:
    """``(round, node)`` of the ballot node ``node_id`` promised, from its ClusterInfo."""
    info = cluster.info(node_id)
    text = next(n.ballot for n in info.nodes if n.node_id == node_id)
    round_, _, node = text.partition(".")
    return int(round_), int(node)


def commit_of(cluster: Cluster, node_id: int) -> int:
    info = cluster.info(node_id)
    return next(n.commit_index for n in info.nodes if n.node_id == node_id)


def paxos_batch(cid: str, sender: int, *messages: replication_pb2.PaxosMessage
                ) -> replication_pb2.PeerBatch:
    return replication_pb2.PeerBatch(messages=list(messages), cluster_id=cid, sender=sender)


def stream(stub, batches: Iterable[replication_pb2.PeerBatch]) -> replication_pb2.PeerAck:
    return stub.Stream(iter(batches), timeout=RPC_S)


def quiet(cluster: Cluster, for_s: float = 1.0, timeout_s: float = 30) -> int:
    """The commit index, once every running node holds the same one for ``for_s``
    (nothing in flight: the next slot is free on every node)."""
    def still():
        before = {commit_of(cluster, i) for i in cluster.procs}
        time.sleep(for_s)
        after = {commit_of(cluster, i) for i in cluster.procs}
        return before.pop() if len(before) == 1 and before == after else None

    return wait_until(still, timeout_s, "the cluster to be quiet")


def forged_accept(cluster: Cluster, cid: str, src: int, targets: list[int], data: bytes,
                  *, claim_commit: bool, client: str) -> tuple[int, int]:
    """An Accept at ballot (the highest round + 1000, ``src``) for the next free slot,
    carrying ``data``, from ``src`` to each of ``targets``; returns (slot, round).
    ``claim_commit``: the Accept also says the slot is committed."""
    slot = quiet(cluster) + 1
    rnd = max(ballot_of(cluster, i)[0] for i in cluster.procs) + 1000
    for target in targets:
        accept = pb.PaxosMessage(src=src, dst=target, accept=pb.Accept(
            ballot=pb.Ballot(round=rnd, node=src), first_slot=slot,
            proposals=[pb.PaxosProposal(client_id=client, seq=1, data=data)],
            commit=slot if claim_commit else slot - 1))
        channel, stub = peer_stub(cluster, target)
        with channel:
            stream(stub, [paxos_batch(cid, src, accept)])
    return slot, rnd


# ------------------------------------------------------------------- checking

def alive(cluster: Cluster) -> None:
    dead = cluster.exited()
    assert not dead, "nodes died: " + "; ".join(
        f"{name} (code {code}): {path.read_text(errors='replace')[-3000:]}"
        for name, (code, path) in dead.items())


def enqueue(cluster: Cluster, queue: str, n: int = 6) -> dict[int, bytes]:
    """``n`` jobs in ``queue`` (through the leader; owners spread over the nodes)."""
    leader = cluster.wait_leader(LEADER_S)
    payloads = [f"{queue}-{k}-{secrets.token_hex(4)}".encode() for k in range(n)]
    ids = cluster.stub(leader).Enqueue(queue_pb2.EnqueueRequest(jobs=[
        queue_pb2.NewJob(queue=queue, priority=1 + k % 5, payload=p)
        for k, p in enumerate(payloads)]), timeout=RPC_S).job_ids
    assert len(ids) == n
    return dict(zip(ids, payloads))


def stats(cluster: Cluster, node_id: int, queue: str) -> tuple:
    found = cluster.stub(node_id).Stats(queue_pb2.StatsRequest(queue=queue), timeout=RPC_S).queues
    q = found[0] if found else queue_pb2.QueueStats()
    return tuple(q.ready_by_priority) or (0,) * 5, q.delayed, q.leased, q.dead


def agreed_stats(cluster: Cluster, queue: str, timeout_s: float = 30) -> tuple:
    """The stats of ``queue``, once every running node reports the same."""
    def same():
        seen = {stats(cluster, i, queue) for i in cluster.procs}
        return seen.pop() if len(seen) == 1 else None

    return wait_until(same, timeout_s, f"every node to agree on the stats of {queue!r}")


def intact(cluster: Cluster, queue: str, jobs: dict[int, bytes], leased: int = 0) -> None:
    """Every node holds ``jobs`` (all ready, ``leased`` of them leased): nothing lost,
    nothing added."""
    ready, delayed, held, dead = agreed_stats(cluster, queue)
    assert (sum(ready), delayed, held, dead) == (len(jobs) - leased, 0, leased, 0), \
        (queue, ready, delayed, held, dead)


def dequeue_all(cluster: Cluster, queue: str, n: int, consumer: str = "checker",
                timeout_s: float = 30) -> list[queue_pb2.Job]:
    """``n`` jobs of ``queue``, long-polled from every node (each serves its own)."""
    got: dict[int, queue_pb2.Job] = {}
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        for i in list(cluster.procs):
            if len(got) == n:
                break
            jobs = cluster.stub(i).Dequeue(queue_pb2.DequeueRequest(
                queue=queue, max_jobs=n - len(got), wait_ms=200, lease_ms=60_000,
                consumer_id=consumer), timeout=RPC_S).jobs
            got.update((j.job_id, j) for j in jobs)
    assert len(got) == n, f"{len(got)} of {n} jobs of {queue!r} came back"
    return list(got.values())


def ack(cluster: Cluster, jobs: Iterable[queue_pb2.Job]) -> None:
    refs = [queue_pb2.JobRef(job_id=j.job_id, attempt=j.attempt, receipt=j.receipt) for j in jobs]
    leader = cluster.wait_leader(LEADER_S)
    results = cluster.stub(leader).Ack(queue_pb2.AckRequest(jobs=refs), timeout=RPC_S).results
    assert [(r.job_id, r.ok, r.error) for r in results] == [(r.job_id, True, "") for r in refs]


def drain(cluster: Cluster, queue: str, jobs: dict[int, bytes]) -> None:
    """Every job comes back with its payload, and acks; then the queue is empty everywhere."""
    got = dequeue_all(cluster, queue, len(jobs))
    assert {j.job_id: j.payload for j in got} == jobs
    ack(cluster, got)
    assert agreed_stats(cluster, queue) == ((0,) * 5, 0, 0, 0)


def commits(cluster: Cluster, queue: str) -> None:
    """The leader still commits: a fresh Enqueue, Dequeue and Ack round works."""
    probe = f"{queue}.probe-{secrets.token_hex(3)}"
    jobs = enqueue(cluster, probe, 2)
    drain(cluster, probe, jobs)


def healthy(cluster: Cluster, queue: str, jobs: dict[int, bytes], leased: int = 0) -> None:
    alive(cluster)
    cluster.wait_leader(LEADER_S)
    commits(cluster, queue)
    intact(cluster, queue, jobs, leased)
    alive(cluster)


def restart(cluster: Cluster, nodes: Iterable[int] | None = None) -> None:
    """Stop ``nodes`` (all by default) and start them again; wait for one leader."""
    nodes = list(nodes or cluster.ids)
    for i in nodes:
        cluster.stop(i)
    for i in nodes:
        cluster.start(i)
    try:
        cluster.wait_leader(LEADER_S)
    except AssertionError:
        alive(cluster)  # a node that exited says why
        raise


def log_text(cluster: Cluster, node_id: int) -> str:
    return cluster.log_path(node_id).read_text(errors="replace")


def counter(cluster: Cluster, node_id: int, name: str) -> float:
    return cluster.report(node_id).counters[name]
