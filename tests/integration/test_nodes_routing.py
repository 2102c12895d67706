"""The controller's /v1/* across linked nodes, with real daemons on 127.0.0.1: a
controller and one or two nodes, each with its own CORRAL_HOME and key, fake
llama-servers started on demand by each daemon's own router.

Which daemon served a request is read from the daemons' own instance lists (the one
that started an instance for it), never from the relayed answer alone. Waits are
wait-untils, never timing thresholds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import openai
import pytest

from corral.supervisor.offline import stop_all_offline
from tests.conftest import DaemonProcess, wait_for
from tests.integration.conftest import api
from tests.integration.test_nodes import env_of_node, node_api, url_of, wait_node
from tests.integration.test_pulls import REPO, hub  # noqa: F401
from tests.integration.test_router_placement import fake_nvidia_smi


def make_gguf(path: Path) -> Path:
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_file_type(15)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    return path


class Fleet:
    """A controller and its nodes (real daemons), all stopped with their instances after."""

    def __init__(self, tmp_path: Path, daemon_env: dict[str, str], **env: str) -> None:
        self.tmp_path, self.daemon_env = tmp_path, daemon_env
        self.started: list[DaemonProcess] = []
        self.keys: dict[str, str] = {}
        self.nodes: dict[str, DaemonProcess] = {}
        self.controller = self._start(
            {**daemon_env, "CORRAL_NODE_POLL_INTERVAL": "0.2", **env}, None
        )

    def _start(self, env, name) -> DaemonProcess:
        d = DaemonProcess(env).start()
        self.started.append(d)
        return d

    def node(self, name: str, *models: Path, **env: str) -> DaemonProcess:
        """A node daemon with ``models`` in its index (and ``env``), linked to the
        controller."""
        d = self._start(env_of_node(self.tmp_path, self.daemon_env, name, **env), name)
        made = d.cli("keys", "create", "controller")
        assert made.returncode == 0, made.stderr
        key = self.keys[name] = made.stdout.strip()
        for model in models:
            status, body = node_api(d, key, "POST", "/api/v1/models/import", {"path": str(model)})
            assert status == 200, (status, body)
        status, body = api(
            self.controller, "POST", "/api/v1/nodes", {"name": name, "url": url_of(d), "key": key}
        )
        assert status == 201, (status, body)
        self.nodes[name] = d
        return d

    def close(self) -> None:
        for d in self.started:
            d.stop()
            stop_all_offline(d.settings, timeout=1.0)


@pytest.fixture
def fleet(tmp_path, daemon_env):
    f = Fleet(tmp_path, daemon_env)
    try:
        yield f
    finally:
        f.close()


def client(d: DaemonProcess, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=d.settings.daemon_url + "/v1", api_key=key, max_retries=0, timeout=60
    )


def names_on(d: DaemonProcess, key: str | None = None) -> list[str]:
    """The names of ``d``'s own instances."""
    headers = {"Authorization": f"Bearer {key}"} if key else None
    status, body = api(d, "GET", "/api/v1/instances", headers=headers)
    assert status == 200, (status, body)
    return sorted(i["name"] for i in body)


def chat(d: DaemonProcess, model: str, key: str = "unused") -> str:
    """A chat through the official openai client (closed after): the answer's text."""
    with client(d, key) as c:
        reply = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    return reply.choices[0].message.content


def post_chat(d: DaemonProcess, model: str) -> tuple[int, str | None, dict]:
    """(status, Retry-After, JSON body) of a chat request to ``d``."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", d.settings.port, timeout=60)
    try:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        return resp.status, resp.getheader("Retry-After"), json.loads(resp.read())
    finally:
        conn.close()


def listed(d: DaemonProcess, model: str, key: str | None = None) -> dict | None:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    status, body = api(d, "GET", "/v1/models", headers=headers)
    assert status == 200, (status, body)
    return next((m for m in body["data"] if m["id"] == model), None)


def test_a_model_only_on_a_node_is_started_and_served_there(fleet, tmp_path):
    model = make_gguf(tmp_path / "g" / "faraway-Q4_K_M.gguf")
    box = fleet.node("box", model)
    key = fleet.keys["box"]
    ctl = fleet.controller
    # the union /v1/models names the node, once the poll has seen it
    entry = wait_for(lambda: listed(ctl, "faraway-q4_k_m"), 30, message="the node's model listed")
    assert entry["nodes"] == ["box"] and entry["local"] is False and entry["state"] == "stopped"

    assert chat(ctl, "faraway-q4_k_m")
    assert names_on(ctl) == []  # nothing ran here
    assert names_on(box, key) == ["faraway-q4_k_m"]  # the node's router started it
    # a stream goes the same way, chunk by chunk, on the same instance
    with client(ctl) as c:
        stream = c.chat.completions.create(
            model="faraway-q4_k_m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        pieces = [
            e.choices[0].delta.content for e in stream if e.choices and e.choices[0].delta.content
        ]
    assert len(pieces) >= 2 and names_on(box, key) == ["faraway-q4_k_m"]
    # the union says it runs, on the node
    wait_for(lambda: listed(ctl, "faraway-q4_k_m")["state"] == "ready", 30)
    # counted at the controller as the model on that node
    status, usage = api(ctl, "GET", "/api/v1/usage")
    assert status == 200 and usage["instances"]["faraway-q4_k_m@box"]["requests"] == 2


def test_ollama_and_anthropic_clients_reach_a_node_s_model_through_the_controller(fleet, tmp_path):
    model = make_gguf(tmp_path / "g" / "faraway-Q4_K_M.gguf")
    box = fleet.node("box", model)
    key = fleet.keys["box"]
    ctl = fleet.controller
    wait_for(lambda: listed(ctl, "faraway-q4_k_m"), 30)
    body = {
        "model": "faraway-q4_k_m",
        "stream": False,
        "messages": [{"role": "user", "content": "hi"}],
    }
    status, answer = api(ctl, "POST", "/api/chat", body)  # Ollama's dialect, translated here
    assert status == 200 and answer["message"]["content"] and answer["done"] is True, answer
    assert answer["model"] == "faraway-q4_k_m"
    assert names_on(ctl) == [] and names_on(box, key) == ["faraway-q4_k_m"]
    anthropic = {
        "model": "faraway-q4_k_m",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    }
    status, answer = api(ctl, "POST", "/v1/messages", anthropic)
    assert status == 200 and answer["type"] == "message" and answer["content"], answer
    status, answer = api(ctl, "POST", "/api/chat", {**body, "model": "nowhere"})
    assert status == 404, answer


def test_a_model_here_is_served_here_and_the_hop_header_keeps_a_request_local(fleet, tmp_path):
    here = make_gguf(tmp_path / "g" / "nearby-Q4_K_M.gguf")
    there = make_gguf(tmp_path / "h" / "faraway-Q4_K_M.gguf")
    ctl = fleet.controller
    assert ctl.cli("import", str(here)).returncode == 0
    box = fleet.node("box", here, there)
    key = fleet.keys["box"]
    wait_for(lambda: listed(ctl, "faraway-q4_k_m"), 30)
    entry = listed(ctl, "nearby-q4_k_m")
    assert entry["local"] is True and entry["nodes"] == ["box"]
    # both have it, neither runs it: this daemon is the better place (no hop) on a tie
    assert chat(ctl, "nearby-q4_k_m")
    assert names_on(ctl) == ["nearby-q4_k_m"] and names_on(box, key) == []
    # a request a controller relayed (x-corral-hop) is served where it arrives, never sent on
    status, body = api(
        ctl,
        "POST",
        "/v1/chat/completions",
        {"model": "faraway-q4_k_m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-corral-hop": "1"},
    )
    assert status == 404, (status, body)
    assert names_on(box, key) == []


def test_an_inference_caller_stays_an_inference_caller_on_the_node(fleet, tmp_path):
    """The controller holds the node's admin key; a request relayed for an inference key
    must not get an admin's rights there (starting a user's stopped instance)."""
    model = make_gguf(tmp_path / "g" / "faraway-Q4_K_M.gguf")
    box = fleet.node("box", model)
    key = fleet.keys["box"]
    status, inst = node_api(
        box, key, "POST", "/api/v1/instances", {"model": str(model), "name": "users"}
    )
    assert status == 201, (status, inst)
    wait_for(
        lambda: node_api(box, key, "GET", "/api/v1/instances/users")[1]["state"] == "ready", 30
    )
    assert node_api(box, key, "POST", "/api/v1/instances/users/stop")[0] == 200
    ctl = fleet.controller
    made = ctl.cli("keys", "create", "app", "--scope", "inference")
    assert made.returncode == 0, made.stderr
    inference = made.stdout.strip()
    admin = ctl.cli("keys", "create", "me").stdout.strip()
    wait_for(lambda: (listed(ctl, "users", admin) or {}).get("nodes") == ["box"], 30)
    with pytest.raises(openai.PermissionDeniedError, match="only an admin key may start it"):
        chat(ctl, "users", inference)
    assert node_api(box, key, "GET", "/api/v1/instances/users")[1]["state"] == "stopped"
    assert chat(ctl, "users", admin)  # an admin here is an admin there
    assert node_api(box, key, "GET", "/api/v1/instances/users")[1]["state"] == "ready"


def test_a_dead_node_fails_over_to_one_that_has_the_model_then_503(fleet, tmp_path):
    model = make_gguf(tmp_path / "g" / "shared-Q4_K_M.gguf")
    a = fleet.node("a", model)
    fleet.node("b", model)
    ctl = fleet.controller
    wait_for(lambda: (listed(ctl, "shared-q4_k_m") or {}).get("nodes") == ["a", "b"], 30)
    assert chat(ctl, "shared-q4_k_m")
    first = "a" if names_on(a, fleet.keys["a"]) else "b"
    other = "b" if first == "a" else "a"
    assert names_on(fleet.nodes[other], fleet.keys[other]) == []
    # the serving node's daemon dies (its instance too): the next request, at once, is
    # served by the other node, before the controller even marks the dead one down
    dead = fleet.nodes[first]
    dead.stop()
    stop_all_offline(dead.settings, timeout=1.0)
    assert chat(ctl, "shared-q4_k_m")
    assert names_on(fleet.nodes[other], fleet.keys[other]) == ["shared-q4_k_m"]
    # both gone: 503 with Retry-After, naming the nodes, once both are down too
    survivor = fleet.nodes[other]
    survivor.stop()
    stop_all_offline(survivor.settings, timeout=1.0)
    status, retry, body = post_chat(ctl, "shared-q4_k_m")
    assert status == 503 and retry == "30", (status, retry, body)
    assert "shared-q4_k_m" in body["error"]["message"]
    wait_node(ctl, "a", state="down")
    wait_node(ctl, "b", state="down")
    status, retry, body = post_chat(ctl, "shared-q4_k_m")
    assert status == 503 and retry == "30", (status, body)
    assert "a: down" in body["error"]["message"] and "b: down" in body["error"]["message"]
    # a name nobody has is still this daemon's plain 404
    status, body = api(
        ctl,
        "POST",
        "/v1/chat/completions",
        {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
    )
    assert status == 404, (status, body)
    assert json.dumps(body).count("Bearer") == 0


# -- a model nobody has: pulled first (router_pull_missing) ---------------------------------


@pytest.fixture
def pulling(tmp_path, daemon_env, hub):  # noqa: F811
    """A controller that pulls missing Hub models, and the env of a node with two GPUs
    (a recorded nvidia-smi) that reaches the fake Hub."""
    f = Fleet(
        tmp_path,
        {**daemon_env, "CORRAL_HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1"},
        CORRAL_ROUTER_PULL_MISSING="1",
    )
    tools = fake_nvidia_smi(tmp_path / "node-tools", "nvidia-smi-2gpu.csv")
    gpu_env = {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    try:
        yield f, gpu_env
    finally:
        f.close()


def test_a_hub_model_nobody_has_is_pulled_on_the_gpu_node_then_served_there(pulling):
    fleet, gpu_env = pulling
    box = fleet.node("box", **gpu_env)
    key = fleet.keys["box"]
    ctl = fleet.controller
    wait_for(lambda: api(ctl, "GET", "/api/v1/nodes")[1][0]["gpus"], 30)
    admin = ctl.cli("keys", "create", "me").stdout.strip()
    inference = ctl.cli("keys", "create", "app", "--scope", "inference").stdout.strip()
    ref = f"{REPO}:Q8_0"
    # an inference key does not fill anybody's disk
    with pytest.raises(openai.PermissionDeniedError, match="only an admin key may have it pulled"):
        chat(ctl, ref, inference)
    assert node_api(box, key, "GET", "/api/v1/models")[1] == []
    # an admin's request: the node with GPUs pulls it (not this CPU-only daemon), then serves
    assert chat(ctl, ref, admin)
    models = node_api(box, key, "GET", "/api/v1/models")[1]
    assert [(m["repo"], m["id"]) for m in models] == [(REPO, ref)]
    assert names_on(box, key) == [models[0]["name"]]
    assert api(ctl, "GET", "/api/v1/models", headers={"Authorization": f"Bearer {admin}"})[1] == []
    assert names_on(ctl, admin) == []
    # a name that is no Hub reference, or one the Hub does not have, is an error, not a pull
    with pytest.raises(openai.NotFoundError):
        chat(ctl, "acme/nothing-here-GGUF:Q4_K_M", admin)


def test_without_nodes_a_missing_hub_model_is_pulled_here(tmp_path, daemon_env, hub):  # noqa: F811
    env = {
        **daemon_env,
        "CORRAL_HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "CORRAL_ROUTER_PULL_MISSING": "1",
    }
    d = DaemonProcess(env).start()
    try:
        assert chat(d, f"{REPO}:Q4_K_M")
        [model] = api(d, "GET", "/api/v1/models")[1]
        assert model["id"] == f"{REPO}:Q4_K_M" and names_on(d) == [model["name"]]
    finally:
        d.stop()
        stop_all_offline(d.settings, timeout=1.0)


def test_a_missing_model_is_not_pulled_unless_the_setting_says_so(fleet, hub):  # noqa: F811
    status, _, body = post_chat(fleet.controller, f"{REPO}:Q4_K_M")
    assert status == 404 and "not in the index" in body["error"]["message"], body
