"""Gateway settings: flags or the same keys in a TOML file, flags win, bad values refused
with a message naming the flag, the value and the limit."""

from __future__ import annotations

import pytest

from dpq.gateway import config
from dpq.gateway.config import ConfigError, from_args
from dpq.queue import rules, validate
from dpq.services import admission

NODES = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"


def test_flags_alone_give_the_documented_defaults():
    cfg = from_args(["--nodes", NODES])
    assert cfg.listen == "127.0.0.1:7100" == config.DEFAULT_LISTEN
    assert cfg.nodes == NODES.split(",")
    assert cfg.max_inflight == 4 == config.DEFAULT_MAX_INFLIGHT
    assert cfg.dedup_window_ms == 3_600_000 == validate.DEFAULT_DEDUP_WINDOW_MS
    assert cfg.max_payload_bytes == 1 << 20 == validate.DEFAULT_MAX_PAYLOAD_BYTES
    assert cfg.server_limits.max_request_bytes == (16 << 20) + (1 << 20)
    assert cfg.admission == admission.AdmissionLimits()
    assert (cfg.log_dir, cfg.log_level, cfg.request_log_level) == (None, "WARNING", "INFO")
    assert cfg.tls is None and not cfg.insecure


def test_the_toml_file_takes_the_flags_keys_with_dashes_or_underscores(tmp_path):
    toml = tmp_path / "gateway.toml"
    toml.write_text('listen = "127.0.0.1:7200"\n'
                    'nodes = ["127.0.0.1:7201", "127.0.0.1:7202", "127.0.0.1:7203"]\n'
                    "max-inflight = 9\n"
                    "dedup_window_ms = 60000\n"
                    "max-payload-bytes = 2048\n"
                    "client-max-inflight-jobs = 77\n"
                    'log-level = "ERROR"\n'
                    "insecure = true\n")
    cfg = from_args(["--config", str(toml)])
    assert cfg.listen == "127.0.0.1:7200"
    assert cfg.nodes == ["127.0.0.1:7201", "127.0.0.1:7202", "127.0.0.1:7203"]
    assert (cfg.max_inflight, cfg.dedup_window_ms, cfg.max_payload_bytes) == (9, 60_000, 2048)
    # the request limit follows the payload limit, as with the flag
    assert cfg.server_limits.max_request_bytes == (16 << 20) + 2048
    assert cfg.admission.max_jobs == 77
    assert cfg.log_level == "ERROR" and cfg.insecure


def test_a_flag_wins_over_the_toml_file(tmp_path):
    toml = tmp_path / "gateway.toml"
    toml.write_text(f'nodes = "{NODES}"\nmax-inflight = 9\nlisten = "127.0.0.1:7200"\n')
    cfg = from_args(["--config", str(toml), "--max-inflight", "2", "--nodes", "127.0.0.1:7301"])
    assert (cfg.max_inflight, cfg.nodes) == (2, ["127.0.0.1:7301"])
    assert cfg.listen == "127.0.0.1:7200"  # not given as a flag: the file's


@pytest.mark.parametrize(("argv", "message"), [
    (["--max-inflight", "0"], "--max-inflight 0 is too small: at least 1"),
    (["--dedup-window-ms", "-1"], "--dedup-window-ms -1 is too small: at least 0"),
    (["--max-payload-bytes", str(rules.MAX_PAYLOAD_BYTES + 1)],
     (f"--max-payload-bytes {rules.MAX_PAYLOAD_BYTES + 1} is too large: "
     f"at most {rules.MAX_PAYLOAD_BYTES}")),
    (["--max-payload-bytes", "1000", "--max-request-bytes", "10"],
     "--max-request-bytes 10 cannot carry one job"),
    (["--nodes", "nowhere"], "--nodes 'nowhere' is not a list of HOST:PORT"),
])
def test_a_bad_flag_is_refused_naming_the_flag_the_value_and_the_limit(argv, message):
    with pytest.raises(ConfigError, match=message):
        from_args(["--nodes", NODES, *argv])


def test_a_bad_toml_value_is_refused_like_the_flag(tmp_path):
    toml = tmp_path / "gateway.toml"
    toml.write_text(f'nodes = "{NODES}"\nmax-inflight = "four"\n')
    with pytest.raises(ConfigError, match="--max-inflight 'four' is not a whole number"):
        from_args(["--config", str(toml)])
    toml.write_text(f'nodes = "{NODES}"\nmax-inflght = 4\n')
    with pytest.raises(ConfigError, match="unknown setting.*max_inflght"):
        from_args(["--config", str(toml)])
    toml.write_text("nodes = [\n")
    with pytest.raises(ConfigError, match=f"--config {toml} is not valid TOML"):
        from_args(["--config", str(toml)])


def test_nodes_are_required_from_a_flag_or_the_file():
    with pytest.raises(ConfigError, match="--nodes is required"):
        from_args([])


def test_tls_from_the_file_and_insecure_from_a_flag_are_refused_together(tmp_path):
    from dpq.security import certs

    certs.init(tmp_path / "tls", 1)
    toml = tmp_path / "gateway.toml"
    toml.write_text(f'nodes = "{NODES}"\ntls-dir = "{tmp_path / "tls"}"\n')
    cfg = from_args(["--config", str(toml)])
    assert cfg.tls is not None and cfg.tls.identity.role == "gateway"
    with pytest.raises(ConfigError, match="--insecure turns TLS off"):
        from_args(["--config", str(toml), "--insecure"])
