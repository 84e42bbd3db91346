"""Node settings refused before anything starts, each with a message that says what to do."""

from __future__ import annotations

import pytest

from dpq.node.config import ConfigError, NodeConfig


def test_a_single_node_cannot_rejoin_because_it_has_no_one_to_catch_up_from(tmp_path):
    with pytest.raises(ConfigError, match="a single node has none"):
        NodeConfig(node_id=1, listen="127.0.0.1:7101", peers={1: ""}, data_dir=str(tmp_path),
                   rejoin=True)
    # the same node without --rejoin is fine
    assert not NodeConfig(node_id=1, listen="127.0.0.1:7101", peers={1: ""},
                          data_dir=str(tmp_path)).rejoin
