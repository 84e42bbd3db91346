"""Node settings refused before anything starts, each with a message that says what to do."""

from __future__ import annotations

import argparse

import pytest

from dpq.node.config import ConfigError, NodeConfig, add_arguments, from_arguments


def test_a_single_node_cannot_rejoin_because_it_has_no_one_to_catch_up_from(tmp_path):
    with pytest.raises(ConfigError, match="a single node has none"):
        NodeConfig(node_id=1, listen="127.0.0.1:7101", peers={1: ""}, data_dir=str(tmp_path),
                   rejoin=True)
    # the same node without --rejoin is fine
    assert not NodeConfig(node_id=1, listen="127.0.0.1:7101", peers={1: ""},
                          data_dir=str(tmp_path)).rejoin


def _parse(*argv: str) -> NodeConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_arguments(parser.parse_args(list(argv)))


def test_snapshot_every_slots_comes_from_the_flag_or_the_toml_file(tmp_path):
    base = ("--id", "1", "--listen", "127.0.0.1:7101", "--data-dir", str(tmp_path))
    assert _parse(*base).snapshot_every_slots == 20_000
    assert _parse(*base, "--snapshot-every-slots", "100").snapshot_every_slots == 100
    toml = tmp_path / "node.toml"
    toml.write_text("snapshot-every-slots = 300\n")
    assert _parse(*base, "--config", str(toml)).snapshot_every_slots == 300
    # the flag wins over the file
    assert _parse(*base, "--config", str(toml),
                  "--snapshot-every-slots", "50").snapshot_every_slots == 50


@pytest.mark.parametrize("value", ["0", "-5"])
def test_snapshot_every_slots_below_one_is_refused_naming_the_flag_and_the_limit(tmp_path, value):
    with pytest.raises(ConfigError,
                       match=f"--snapshot-every-slots {value} is too small: at least 1"):
        _parse("--id", "1", "--listen", "127.0.0.1:7101", "--data-dir", str(tmp_path),
               "--snapshot-every-slots", value)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--max-payload-bytes", str((64 << 20) + 1),
     f"--max-payload-bytes {(64 << 20) + 1} is too large: at most {64 << 20}"),
    ("--dedup-window-ms", "-1", "--dedup-window-ms -1 is too small: at least 0"),
])
def test_limits_no_node_could_apply_are_refused_naming_the_flag_and_the_limit(tmp_path, flag,
                                                                              value, message):
    with pytest.raises(ConfigError, match=message):
        _parse("--id", "1", "--listen", "127.0.0.1:7101", "--data-dir", str(tmp_path), flag, value)


def test_a_toml_value_of_the_wrong_kind_is_refused_naming_the_key(tmp_path):
    toml = tmp_path / "node.toml"
    toml.write_text('max-payload-bytes = "1MiB"\n')
    with pytest.raises(ConfigError, match="--max-payload-bytes '1MiB' is not a whole number"):
        _parse("--id", "1", "--listen", "127.0.0.1:7101", "--data-dir", str(tmp_path),
               "--config", str(toml))
