"""``--http-listen``: off by default, HOST:PORT (flag or TOML), a bad value refused."""

from __future__ import annotations

import pytest

from dpq.gateway.config import ConfigError, from_args

NODES = "127.0.0.1:7101"


def test_the_console_is_off_by_default_and_on_with_the_flag_or_the_file(tmp_path):
    assert from_args(["--nodes", NODES]).http_listen is None
    assert from_args(["--nodes", NODES, "--http-listen", "127.0.0.1:8080"]).http_listen == \
        "127.0.0.1:8080"
    toml = tmp_path / "gateway.toml"
    toml.write_text('http-listen = "127.0.0.1:9080"\n')
    assert from_args(["--nodes", NODES, "--config", str(toml)]).http_listen == "127.0.0.1:9080"


def test_a_bad_address_is_refused_naming_the_flag():
    with pytest.raises(ConfigError, match="--http-listen 'localhost' is not HOST:PORT"):
        from_args(["--nodes", NODES, "--http-listen", "localhost"])
