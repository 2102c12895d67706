"""``corral gpus --node NAME``: the node's GPUs, detected there (a recorded two-card
``nvidia-smi`` on the node's PATH only), not this machine's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.test_nodes import add, cli, env_of_node, pair, url_of  # noqa: F401
from tests.integration.test_router_placement import fake_nvidia_smi


@pytest.fixture
def node_env(tmp_path: Path, daemon_env: dict[str, str]) -> dict[str, str]:
    tools = fake_nvidia_smi(tmp_path / "node-bin", "nvidia-smi-2gpu.csv")
    return env_of_node(tmp_path, daemon_env, PATH=f"{tools}{os.pathsep}{os.environ['PATH']}")


def test_gpus_of_a_node_are_detected_there(pair):  # noqa: F811
    controller, node, key = pair
    assert add(controller, "box", url_of(node), key)[0] == 201
    out = cli(controller, "gpus", "--node", "box", "--json")
    assert out.returncode == 0, out.stderr
    there = json.loads(out.stdout)
    names = [g["name"] for g in there["gpus"]]
    assert names == ["NVIDIA GeForce RTX 3060", "NVIDIA GeForce RTX 2080"]
    assert there["backend"]["name"] == "cuda" and "builds" not in there
    here = json.loads(cli(controller, "gpus", "--json").stdout)
    assert [g["name"] for g in here["gpus"]] != names  # this machine: no such cards
    shown = cli(controller, "gpus", "--node", "box").stdout
    assert "RTX 3060" in shown and "backend: cuda" in shown
