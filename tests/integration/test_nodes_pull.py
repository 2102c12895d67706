"""``corral pull --node NAME``: the node downloads from the Hub itself (here a fake Hub
on 127.0.0.1 that only the node is pointed at), and the controller's CLI shows the
progress relayed from the node's event stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_nodes import add, cli, env_of_node, node_api, pair, url_of  # noqa: F401
from tests.integration.test_pulls import REPO, hub  # noqa: F401


@pytest.fixture
def node_env(tmp_path: Path, daemon_env: dict[str, str], hub) -> dict[str, str]:  # noqa: F811
    return env_of_node(
        tmp_path,
        daemon_env,
        CORRAL_HF_ENDPOINT=hub.url,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(tmp_path / "node-hf"),
    )


def test_pull_on_a_node_downloads_there(pair, hub):  # noqa: F811
    controller, node, key = pair
    assert add(controller, "box", url_of(node), key)[0] == 201
    out = cli(controller, "pull", f"{REPO}:Q8_0", "--node", "box", "--json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert events and events[-1]["state"] == "done"
    models = node_api(node, key, "GET", "/api/v1/models")[1]
    assert [m["repo"] for m in models] == [REPO] and "Q8_0" in models[0]["path"]
    assert Path(models[0]["path"]).is_relative_to(node.settings.home)
    assert cli(controller, "ls", "--json").stdout.strip() in ("", "[]")  # not here
