"""A real ``dpq-gateway --config FILE.toml`` serves with the file's settings."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from support.cluster import free_ports
from support.dpq_up import CWD, ENV

from dpq.v1 import queue_pb2, queue_pb2_grpc

pytestmark = pytest.mark.slow


def test_a_gateway_started_with_a_toml_file_serves_with_its_values(tmp_path):
    listen, node = free_ports(2)
    toml = tmp_path / "gateway.toml"
    # a node that is not there: the payload limit is checked before anything is proposed
    toml.write_text(f'listen = "127.0.0.1:{listen}"\nnodes = ["127.0.0.1:{node}"]\n'
                    "max-payload-bytes = 100\ninsecure = true\n")
    proc = subprocess.Popen([sys.executable, "-m", "dpq.gateway", "--config", str(toml)],
                            stdout=subprocess.PIPE, stderr=(tmp_path / "stderr").open("w"),
                            text=True, env=ENV, cwd=CWD)
    try:
        line = proc.stdout.readline()  # "" if it exits
        assert f"serving on 127.0.0.1:{listen}" in line, (tmp_path / "stderr").read_text()
        with grpc.insecure_channel(f"127.0.0.1:{listen}") as channel:
            stub = queue_pb2_grpc.QueueStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.Enqueue(queue_pb2.EnqueueRequest(
                    jobs=[queue_pb2.NewJob(priority=1, payload=b"x" * 101)]), timeout=30)
            error = raised.value
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert "101 bytes is over the limit of 100 bytes" in error.details()
    finally:
        proc.terminate()
        proc.wait(30)
