"""``dpq up`` serves the web console at port-base + 980 (8080 by default) and says so."""

from __future__ import annotations

import json
import urllib.request

import pytest
from support.cluster import wait_until
from support.dpq_up import Up

from dpq.cli.up import CONSOLE_PORT_OFFSET
from dpq.settings import DEFAULT_PORT_BASE

pytestmark = pytest.mark.slow  # a whole dpq up


def test_dpq_up_serves_the_console_and_prints_its_address(tmp_path):
    up = Up(tmp_path / "data")
    try:
        up.wait_up()
        address = f"127.0.0.1:{up.base + CONSOLE_PORT_OFFSET}"
        wait_until(lambda: any(line.strip() == f"console   http://{address}/"
                               for line in up.lines), 10, "the console's line in the banner")

        def cluster():
            with urllib.request.urlopen(f"http://{address}/api/cluster", timeout=10) as answer:
                return json.load(answer)

        info = wait_until(lambda: cluster()["leader_id"], 30, "a leader on the console")
        assert info in {n["id"] for n in cluster()["nodes"]}
        with urllib.request.urlopen(f"http://{address}/", timeout=10) as page:
            assert b"<title>dpq console</title>" in page.read()
        assert up.interrupt() == 0
    finally:
        up.kill()


def test_the_default_port_base_puts_the_console_on_8080():
    assert DEFAULT_PORT_BASE + CONSOLE_PORT_OFFSET == 8080
