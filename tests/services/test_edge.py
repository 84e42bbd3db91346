"""What every port answers to bodies that do not parse, requests over the size limit,
and WatchHealth calls outside its limits: real dpq-node and dpq-gateway processes,
a plain gRPC client sending raw bytes (issue 10, "Bodies that fail to parse" and
"Limits on the public port")."""

from __future__ import annotations

import grpc
import pytest
from support.cluster import Cluster, wait_until
from support.dpq_up import program

from dpq.v1 import queue_pb2, replication_pb2

pytestmark = pytest.mark.slow  # real processes (see pyproject: markers)

REQUEST_LIMIT = 100_000
PAYLOAD_LIMIT = 1_000
WATCHERS = 3  # the gateway holds one
JUNK = b"\xff\xff\xff\xff"
LIMITS = ("--max-payload-bytes", str(PAYLOAD_LIMIT), "--max-request-bytes", str(REQUEST_LIMIT))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database):
    root = tmp_path_factory.mktemp("edge")
    c = Cluster(root, pg_database("edge"), nodes=1,
                args=(*LIMITS, "--max-health-watchers", str(WATCHERS)))
    c.gateway_args = LIMITS
    with c:
        c.wait_leader()
        c.start_gateway()
        c.wait_ready()
        yield c


def _node(cluster: Cluster) -> str:
    return cluster.addresses[1]


def _peer(cluster: Cluster) -> str:
    """Where node 1 serves dpq.v1.Replication (its peer port, once there is one)."""
    return getattr(cluster, "peer_addresses", cluster.addresses)[1]


def _refused(call, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    return info.value.details()


def _no_python(details: str) -> None:
    assert "<class" not in details and "Error" not in details and "Traceback" not in details


@pytest.mark.parametrize(("where", "method", "kind", "message"), [
    ("node", "/dpq.v1.Queue/Enqueue", "unary", "dpq.v1.EnqueueRequest"),
    ("gateway", "/dpq.v1.Queue/Enqueue", "unary", "dpq.v1.EnqueueRequest"),
    ("node", "/dpq.v1.Queue/Dequeue", "unary", "dpq.v1.DequeueRequest"),
    ("node", "/dpq.v1.Queue/EnqueueStream", "stream", "dpq.v1.EnqueueRequest"),
    ("gateway", "/dpq.v1.Queue/EnqueueStream", "stream", "dpq.v1.EnqueueRequest"),
    ("peer", "/dpq.v1.Replication/Propose", "unary", "dpq.v1.ProposeRequest"),
    ("peer", "/dpq.v1.Replication/ProposeStream", "stream", "dpq.v1.ProposeRequest"),
    ("peer", "/dpq.v1.Replication/Stream", "client-stream", "dpq.v1.PeerBatch"),
    ("peer", "/dpq.v1.Replication/WatchHealth", "server-stream", "dpq.v1.HealthRequest"),
    ("node", "/grpc.health.v1.Health/Check", "unary", "grpc.health.v1.HealthCheckRequest"),
])
def test_a_body_that_does_not_parse_is_invalid_argument_naming_the_method(
        cluster, where, method, kind, message):
    address = {"node": _node(cluster), "gateway": cluster.gateway_address,
               "peer": _peer(cluster)}[where]
    with grpc.insecure_channel(address) as channel:
        if kind == "unary":
            call = lambda: channel.unary_unary(method)(JUNK, timeout=10)
        elif kind == "server-stream":
            call = lambda: list(channel.unary_stream(method)(JUNK, timeout=10))
        elif kind == "client-stream":
            call = lambda: channel.stream_unary(method)(iter([JUNK]), timeout=10)
        else:  # one good message, answered; then junk, which ends the call
            good = (replication_pb2.ProposeRequest(client_id="edge", seq=1)
                    if message == "dpq.v1.ProposeRequest" else
                    queue_pb2.EnqueueRequest(jobs=[queue_pb2.NewJob(priority=3)]))
            answers = []

            def requests():
                yield good.SerializeToString()
                # (a stream answers as requests complete: junk sent at once may end
                # it before the good one's answer is out)
                wait_until(lambda: answers, 30, "the good message to be answered")
                yield JUNK

            def call():
                answers.extend(channel.stream_stream(method)(requests(), timeout=30))

        details = _refused(call, grpc.StatusCode.INVALID_ARGUMENT)
        assert details == f"{method}: the request body is not a valid {message}"
        _no_python(details)
        if kind == "stream":
            assert len(answers) == 1
    # and the process goes on serving
    ok = cluster.gateway_stub().Enqueue(
        queue_pb2.EnqueueRequest(jobs=[queue_pb2.NewJob(priority=1, payload=b"x")]), timeout=30)
    assert len(ok.job_ids) == 1


def _jobs(n: int) -> queue_pb2.EnqueueRequest:
    return queue_pb2.EnqueueRequest(
        jobs=[queue_pb2.NewJob(queue="big", priority=3, payload=b"p" * PAYLOAD_LIMIT)] * n)


def test_a_request_over_the_size_limit_is_refused_naming_the_limit(cluster):
    over = _jobs(REQUEST_LIMIT // PAYLOAD_LIMIT + 5)
    assert over.ByteSize() > REQUEST_LIMIT
    # the client ports serve only the public API: gRPC's own cap refuses it before it
    # is read whole, naming the size and the limit
    for stub in (cluster.stub(1), cluster.gateway_stub()):
        details = _refused(lambda stub=stub: stub.Enqueue(over, timeout=30),
                           grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert f"{over.ByteSize()} vs. {REQUEST_LIMIT}" in details
    # the largest legal request goes through on both
    under = _jobs(REQUEST_LIMIT // PAYLOAD_LIMIT - 5)
    assert under.ByteSize() <= REQUEST_LIMIT
    assert len(cluster.stub(1).Enqueue(under, timeout=30).job_ids) == len(under.jobs)
    assert len(cluster.gateway_stub().Enqueue(under, timeout=30).job_ids) == len(under.jobs)


def test_watch_health_below_the_floor_is_refused_and_its_streams_are_capped(cluster):
    with grpc.insecure_channel(_peer(cluster)) as channel:
        watch = channel.unary_stream(
            "/dpq.v1.Replication/WatchHealth",
            request_serializer=replication_pb2.HealthRequest.SerializeToString,
            response_deserializer=replication_pb2.NodeHealthReport.FromString)

        details = _refused(lambda: next(watch(replication_pb2.HealthRequest(interval_ms=10),
                                              timeout=10)),
                           grpc.StatusCode.INVALID_ARGUMENT)
        assert details == ("interval_ms: 10 ms is below the floor of 50 ms "
                           "(0 asks for the node's default)")
        # the floor itself, and 0 (the default), are served
        streams = [watch(replication_pb2.HealthRequest(interval_ms=ms), timeout=60)
                   for ms in (50, 0)]
        assert all(next(s).node_id == 1 for s in streams)

        # the gateway's stream and these two fill the node's WATCHERS places
        details = _refused(lambda: next(watch(replication_pb2.HealthRequest(), timeout=10)),
                           grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "--max-health-watchers 3" in details
        streams.pop().cancel()
        wait_until(lambda: _watch_once(watch), 30, "a place freed by the closed stream")
        for s in streams:
            s.cancel()


def _watch_once(watch) -> bool:
    stream = watch(replication_pb2.HealthRequest(), timeout=10)
    try:
        return next(stream).node_id == 1
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return False
    finally:
        stream.cancel()


@pytest.mark.parametrize("module", ["dpq.node", "dpq.gateway"])
def test_a_request_limit_below_one_job_is_refused_at_start(tmp_path, module):
    common = ("--max-payload-bytes", "1048576", "--max-request-bytes", "1000",
              "--listen", "127.0.0.1:0")
    args = (("--id", "1", "--peers", "1=127.0.0.1:0", "--data-dir", str(tmp_path))
            if module == "dpq.node" else ("--nodes", "127.0.0.1:1"))
    result = program(module, *common, *args, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "--max-request-bytes 1000 cannot carry one job" in lines[0]
    assert "--max-payload-bytes 1048576" in lines[0]


@pytest.mark.parametrize("module", ["dpq.node", "dpq.gateway"])
def test_the_limits_are_flags_documented_in_help(module):
    text = program(module, "--help").stdout
    flags = ["--max-request-bytes", "--client-max-inflight-requests", "--client-max-inflight-jobs"]
    if module == "dpq.node":
        flags += ["--max-peer-message-bytes", "--health-min-interval-ms", "--max-health-watchers"]
    for flag in flags:
        assert flag in text, flag


def test_a_server_of_services_with_different_limits_checks_each_limit_itself():
    """Queue beside Replication on one port: gRPC's cap is Replication's, Queue's is ours."""
    import asyncio

    from dpq.services.limits import ServerLimits
    from dpq.services.queue import QueueServicer
    from dpq.services.server import Server
    from dpq.v1 import queue_pb2_grpc, replication_pb2_grpc

    async def main() -> str:
        limits = ServerLimits(max_request_bytes=REQUEST_LIMIT, max_peer_message_bytes=10**7)
        server = Server("127.0.0.1:0", [
            ("dpq.v1.Queue",
             lambda s: queue_pb2_grpc.add_QueueServicer_to_server(QueueServicer(None), s)),
            ("dpq.v1.Replication", lambda s: replication_pb2_grpc.add_ReplicationServicer_to_server(
                replication_pb2_grpc.ReplicationServicer(), s)),
        ], limits=limits)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await channel.unary_unary("/dpq.v1.Queue/Enqueue")(b"\0" * 200_000)
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return info.value.details()
        finally:
            await server.stop(0)

    assert asyncio.run(main()) == ("/dpq.v1.Queue/Enqueue: the request is 200000 bytes, over the "
                                   f"limit of {REQUEST_LIMIT} bytes (--max-request-bytes)")
