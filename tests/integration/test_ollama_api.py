"""The Ollama API through the official ``ollama`` SDK: a real daemon, the fake llama-server.

Breadth here (every route, streamed and not, errors, the Ollama port); the real model's
smoke run is in tests/real/test_real_ollama.py.
"""

from __future__ import annotations

import base64
import http.client
import json
from pathlib import Path

import ollama
import pytest

from tests.conftest import free_port, wait_for
from tests.integration.conftest import api, listening_socket, sidecar
from tests.integration.test_pulls import REPO, gguf_bytes, hub, hub_daemon  # noqa: F401

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(24)).decode()


def write_gguf(path: Path, *, arch: str = "llama", context: int = 2048) -> Path:
    """A small valid GGUF (gguf-py) with the metadata /api/tags and /api/show read."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(path.stem)
    w.add_file_type(15)  # Q4_K_M
    w.add_context_length(context)
    w.add_string("general.size_label", "268M")
    w.add_string("tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}")
    w.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(200)])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    return path


@pytest.fixture
def tiny(daemon, tmp_path) -> dict:
    """An indexed model ``tiny`` whose fake instance also answers embeddings."""
    path = write_gguf(tmp_path / "models" / "tiny-Q4_K_M.gguf")
    sidecar(path, embeddings=True, tokens=5)
    status, out = api(daemon, "POST", "/api/v1/models/import", {"path": str(path), "name": "tiny"})
    assert status == 200, out
    return out["models"][0]


@pytest.fixture
def client(daemon):
    with ollama.Client(host=f"http://127.0.0.1:{daemon.settings.port}", timeout=60) as c:
        yield c


def raw(port: int, method: str, path: str, body: bytes | None = None, ctype="application/json"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": ctype} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type"), resp.read()
    finally:
        conn.close()


def test_version_tags_and_show(client, tiny):
    status, _, body = raw(client._client.base_url.port, "GET", "/api/version")
    assert status == 200 and json.loads(body)["version"].startswith("0.")
    models = client.list().models
    assert [m.model for m in models] == ["tiny:latest"]
    m = models[0]
    assert m.details.format == "gguf" and m.details.family == "llama"
    assert m.details.parameter_size == "268M" and m.details.quantization_level == "Q4_K_M"
    assert m.size == Path(tiny["path"]).stat().st_size and len(m.digest) == 64
    shown = client.show("tiny")
    assert shown.template.startswith("{% for m in messages %}")
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 2048
    assert shown.modelinfo["tokenizer.ggml.tokens"] is None  # a long array, left out
    assert "completion" in shown.capabilities and "vision" not in shown.capabilities
    assert client.show("tiny:latest").details.family == "llama"


def test_chat_streamed_and_not_then_ps(client, tiny):
    parts = list(
        client.chat(
            model="tiny:latest",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            options={"temperature": 0.1, "num_predict": 4},
        )
    )
    assert len(parts) >= 2 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts).strip()
    last = parts[-1]
    assert last.done_reason == "length"  # num_predict 4 < the fake's 5 tokens
    assert last.eval_count == 4 and last.prompt_eval_count > 0 and last.total_duration > 0
    whole = client.chat(model="tiny", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert whole.done and whole.message.role == "assistant" and whole.message.content
    assert whole.model == "tiny" and whole.eval_count == 5
    running = client.ps().models
    assert len(running) == 1 and running[0].model == "tiny:latest"
    assert running[0].size > 0 and running[0].expires_at is not None


def test_generate_and_embed(client, tiny):
    out = client.generate(model="tiny", prompt="Why is the sky blue?", stream=False)
    assert out.done and out.response
    streamed = list(client.generate(model="tiny", prompt="again", stream=True))
    assert streamed[-1].done and "".join(p.response for p in streamed)
    raw_out = client.generate(model="tiny", prompt="<s>raw", raw=True, stream=False)
    assert raw_out.response
    emb = client.embed(model="tiny", input=["one", "two"])
    assert len(emb.embeddings) == 2 and all(len(v) > 0 for v in emb.embeddings)
    legacy = client.embeddings(model="tiny", prompt="one")
    assert len(legacy.embedding) > 0


def test_copy_makes_an_alias_and_delete_removes(client, tiny):
    assert client.copy("tiny", "my-tiny:latest").status == "success"
    assert client.show("my-tiny").details.family == "llama"
    assert client.chat(model="my-tiny", messages=[{"role": "user", "content": "x"}]).done
    with pytest.raises(ollama.ResponseError) as err:
        client.copy("nope", "other")
    assert err.value.status_code == 404
    assert client.delete("tiny").status == "success"  # imported: files kept, index entry gone
    assert client.list().models == []
    assert Path(tiny["path"]).exists()


def test_bad_input_is_a_4xx_ollama_error(client, tiny):
    port = client._client.base_url.port
    cases = [
        ("POST", "/api/chat", b"{not json"),
        ("POST", "/api/chat", b"[1, 2]"),
        ("POST", "/api/generate", json.dumps({"model": "tiny", "prompt": 5}).encode()),
        ("POST", "/api/show", b"{}"),
        ("POST", "/api/pull", json.dumps({"model": "llama3.2"}).encode()),
        ("DELETE", "/api/delete", b"nope"),
    ]
    for method, path, body in cases:
        status, ctype, payload = raw(port, method, path, body)
        assert status == 400, (path, body, status, payload)
        assert set(json.loads(payload)) == {"error"}, payload
    bad = [
        ({"model": "nope", "messages": []}, 404, "model 'nope' not found"),
        ({"model": "tiny", "messages": [], "options": {"temperature": "hot"}}, 400, "number"),
        ({"model": "tiny", "messages": [], "options": {"num_ctx": 1 << 30}}, 400, "num_ctx"),
        ({"model": "tiny", "messages": [], "options": {"num_ctx": 4096}}, 400, "context length"),
        ({"model": "tiny", "messages": [], "keep_alive": "soon"}, 400, "keep_alive"),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "?", "images": [PNG]}]},
            400,
            "mmproj",
        ),
    ]
    for body, want, text in bad:
        status, _, payload = raw(port, "POST", "/api/chat", json.dumps(body).encode())
        assert status == want, (body, status, payload)
        assert text in json.loads(payload)["error"], payload
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404


def test_num_ctx_launches_with_that_context_and_keep_alive_zero_unloads(daemon, client, tiny):
    out = client.chat(
        model="tiny",
        messages=[{"role": "user", "content": "x"}],
        options={"num_ctx": 1024},
        keep_alive="10m",
    )
    assert out.done
    status, insts = api(daemon, "GET", "/api/v1/instances")
    assert len(insts) == 1, insts
    argv = insts[0]["argv"]
    assert argv[argv.index("--ctx-size") + 1] == "1024"
    assert insts[0]["idle_ttl"] == 600
    assert client.ps().models[0].context_length == 1024
    # the same num_ctx reuses it; an empty request with keep_alive 0 unloads it
    client.chat(
        model="tiny", messages=[{"role": "user", "content": "y"}], options={"num_ctx": 1024}
    )
    assert len(api(daemon, "GET", "/api/v1/instances")[1]) == 1
    # another num_ctx relaunches it (an idle router instance), as Ollama reloads a model
    client.chat(model="tiny", messages=[{"role": "user", "content": "z"}], options={"num_ctx": 512})
    [inst] = api(daemon, "GET", "/api/v1/instances")[1]
    assert inst["argv"][inst["argv"].index("--ctx-size") + 1] == "512"
    unloaded = client.chat(model="tiny", messages=[], keep_alive=0)
    assert unloaded.done_reason == "unload"
    wait_for(lambda: client.ps().models == [], 10, message="unloaded")


def test_pull_from_the_hub_with_progress(hub_daemon):  # noqa: F811
    with ollama.Client(host=f"http://127.0.0.1:{hub_daemon.settings.port}", timeout=60) as c:
        _pull_checks(c)


def _pull_checks(c: ollama.Client) -> None:
    progress = list(c.pull(f"hf.co/{REPO}:Q4_K_M", stream=True))
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    downloads = [p for p in progress if p.status.startswith("downloading")]
    assert downloads and downloads[-1].completed == downloads[-1].total > 0
    [pulled] = c.list().models
    assert pulled.details.quantization_level == "Q4_K_M" and pulled.model.endswith(":latest")
    # the model answers to the name it was pulled as
    assert c.show(f"hf.co/{REPO}:Q4_K_M").details.quantization_level == "Q4_K_M"
    assert c.pull(f"{REPO}:Q8_0", stream=False).status == "success"
    with pytest.raises(ollama.ResponseError) as err:
        c.pull("acme/nope-GGUF:Q4_K_M", stream=False)
    assert err.value.status_code == 404


def test_the_ollama_port(spawn_daemon, daemon_env, tmp_path):
    port = free_port()
    d = spawn_daemon(CORRAL_OLLAMA_PORT=str(port))
    status, ctype, body = raw(port, "GET", "/")
    assert (status, body) == (200, b"Ollama is running") and ctype.startswith("text/plain")
    assert raw(port, "HEAD", "/")[:2] == (200, "text/plain; charset=utf-8")
    # corral's own port keeps the web UI at /
    status, ctype, _ = raw(d.settings.port, "GET", "/")
    assert status == 200 and ctype.startswith("text/html")
    path = write_gguf(tmp_path / "m2" / "small-Q4_K_M.gguf")
    assert api(d, "POST", "/api/v1/models/import", {"path": str(path), "name": "small"})[0] == 200
    with ollama.Client(host=f"http://127.0.0.1:{port}", timeout=60) as c:
        assert [m.model for m in c.list().models] == ["small:latest"]
        assert c.chat(model="small", messages=[{"role": "user", "content": "hi"}]).done
    status, _, body = raw(port, "GET", "/v1/models")
    assert status == 200 and json.loads(body)["data"]


def test_a_taken_ollama_port_is_one_line_at_start(daemon_env):
    from tests.conftest import DaemonProcess

    with listening_socket() as taken:
        env = dict(daemon_env, CORRAL_OLLAMA_PORT=str(taken.getsockname()[1]))
        d = DaemonProcess(env)
        with pytest.raises(RuntimeError):
            d.start(timeout=10)
        d.stop()
        log = d.log_text()
        assert "for the Ollama API: the port is in use" in log and "Traceback" not in log


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def test_tools_and_format_both_ways(client, tiny):
    ask = [{"role": "user", "content": "call get_weather for Paris"}]
    whole = client.chat(model="tiny", messages=ask, tools=TOOLS, stream=False)
    [call] = whole.message.tool_calls
    assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    parts = list(client.chat(model="tiny", messages=ask, tools=TOOLS, stream=True))
    calls = [c for p in parts for c in (p.message.tool_calls or ())]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert isinstance(calls[0].function.arguments, dict) and parts[-1].done
    # the call and its result go back in the next turn, arguments as an object
    follow = ask + [
        {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
        {"role": "tool", "content": "22 C", "tool_name": "get_weather"},
    ]
    assert client.chat(model="tiny", messages=follow, stream=False).done
    out = client.generate(model="tiny", prompt="a JSON object please", format="json", stream=False)
    assert isinstance(json.loads(out.response), dict)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    out = client.chat(
        model="tiny", messages=[{"role": "user", "content": "n?"}], format=schema, stream=False
    )
    json.loads(out.message.content)


def test_images_for_a_model_with_a_projector(daemon, tmp_path):
    folder = tmp_path / "vision"
    path = write_gguf(folder / "eye-Q4_K_M.gguf")
    write_gguf(folder / "mmproj-eye-F16.gguf", arch="clip")
    status, out = api(daemon, "POST", "/api/v1/models/import", {"path": str(path), "name": "eye"})
    assert status == 200 and out["models"][0]["mmproj"], out
    with ollama.Client(host=f"http://127.0.0.1:{daemon.settings.port}", timeout=60) as c:
        assert "vision" in c.show("eye").capabilities
        msg = [{"role": "user", "content": "what is this?", "images": [PNG]}]
        assert c.chat(model="eye", messages=msg, stream=False).message.content
        assert c.generate(model="eye", prompt="describe", images=[PNG], stream=False).response


def test_keep_alive_zero_stops_the_instance_after_the_answer(daemon, client, tiny):
    out = client.chat(model="tiny", messages=[{"role": "user", "content": "x"}], keep_alive=0)
    assert out.done and out.message.content
    wait_for(lambda: client.ps().models == [], 10, message="stopped after the answer")
    loaded = client.generate(model="tiny", prompt="", keep_alive="1h")  # an empty request loads
    assert loaded.done_reason == "load"
    [inst] = api(daemon, "GET", "/api/v1/instances")[1]
    assert inst["state"] == "ready" and inst["idle_ttl"] == 3600


def test_presets_are_listed_and_answer(daemon, client, tiny):
    status, out = api(daemon, "PUT", "/api/v1/presets/tiny-long", {"model": "tiny", "flags": []})
    assert status in (200, 201), out
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {"tiny:latest", "tiny-long:latest"}
    assert listed["tiny-long:latest"].details.family == "llama"
    assert client.chat(model="tiny-long", messages=[{"role": "user", "content": "x"}]).done
    assert client.show("tiny-long:latest").details.quantization_level == "Q4_K_M"


def test_create_and_push_say_what_corral_does_instead(client, daemon):
    for path in ("/api/create", "/api/push"):
        status, _, body = raw(daemon.settings.port, "POST", path, b'{"model": "x"}')
        assert status == 400 and "hf.co/ORG/REPO:QUANT" in json.loads(body)["error"]


def test_ollama_port_equal_to_the_daemon_port_is_refused(daemon_env):
    from tests.conftest import DaemonProcess

    d = DaemonProcess(daemon_env)
    proc = d.cli("serve", "--ollama-port", daemon_env["CORRAL_PORT"], timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "ollama_port" in proc.stderr and "daemon's own port" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_keys_hold_on_the_ollama_port(spawn_daemon, tmp_path):
    port = free_port()
    d = spawn_daemon(CORRAL_OLLAMA_PORT=str(port))
    path = write_gguf(tmp_path / "k" / "keyed-Q4_K_M.gguf")
    assert api(d, "POST", "/api/v1/models/import", {"path": str(path), "name": "keyed"})[0] == 200
    proc = d.cli("keys", "create", "tool", "--scope", "inference")
    assert proc.returncode == 0, proc.stderr
    secret = proc.stdout.strip()
    wait_for(lambda: raw(port, "GET", "/api/tags")[0] == 401, 5, message="keys required")
    status, _, body = raw(port, "GET", "/api/tags")
    assert isinstance(json.loads(body)["error"], str)  # Ollama's shape, for Ollama clients
    assert raw(port, "GET", "/")[:2] == (200, "text/plain; charset=utf-8")  # the probe stays open
    auth = {"authorization": f"Bearer {secret}"}
    with ollama.Client(host=f"http://127.0.0.1:{port}", headers=auth, timeout=60) as c:
        assert [m.model for m in c.list().models] == ["keyed:latest"]
        assert c.chat(model="keyed", messages=[{"role": "user", "content": "hi"}]).done
        with pytest.raises(ollama.ResponseError) as err:
            c.delete("keyed")  # changes the index: an admin's
        assert err.value.status_code == 403


# -- num_ctx and keep_alive go through the router ------------------------------------------


def _import(d, tmp_path: Path, name: str, **fake) -> Path:
    path = write_gguf(tmp_path / name / f"{name}-Q4_K_M.gguf")
    if fake:
        sidecar(path, **fake)
    status, out = api(d, "POST", "/api/v1/models/import", {"path": str(path), "name": name})
    assert status == 200, out
    return path


def _metrics(d) -> str:
    status, text = api(d, "GET", "/metrics")
    assert status == 200
    return text


def test_a_num_ctx_start_evicts_under_the_cap_as_an_on_demand_start(spawn_daemon, tmp_path):
    d = spawn_daemon(CORRAL_ROUTER_MAX_INSTANCES="1")
    _import(d, tmp_path, "alpha")
    _import(d, tmp_path, "beta")
    with ollama.Client(host=f"http://127.0.0.1:{d.settings.port}", timeout=60) as c:
        assert c.chat(model="alpha", messages=[{"role": "user", "content": "x"}]).done
        assert [i["name"] for i in api(d, "GET", "/api/v1/instances")[1]] == ["alpha"]
        out = c.chat(
            model="beta", messages=[{"role": "user", "content": "y"}], options={"num_ctx": 1024}
        )
        assert out.done
    [inst] = api(d, "GET", "/api/v1/instances")[1]  # alpha went: the cap is 1
    assert inst["origin"] == "router" and inst["model"].endswith("beta-Q4_K_M.gguf")
    assert inst["argv"][inst["argv"].index("--ctx-size") + 1] == "1024"
    text = _metrics(d)
    assert 'corral_instances_retired_total{reason="evicted"} 1.0' in text
    assert 'corral_model_load_seconds_count{model="beta"} 1.0' in text  # the router's load


def test_concurrent_chats_with_one_new_num_ctx_start_one_instance(daemon, tmp_path):
    import concurrent.futures

    _import(daemon, tmp_path, "slow", load_seconds=1.5)

    def ask(i: int) -> bool:
        with ollama.Client(host=f"http://127.0.0.1:{daemon.settings.port}", timeout=60) as c:
            msg = [{"role": "user", "content": f"q{i}"}]
            return c.chat(model="slow", messages=msg, options={"num_ctx": 768}).done

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(ask, range(4)))
    insts = api(daemon, "GET", "/api/v1/instances")[1]
    assert len(insts) == 1, insts
    assert insts[0]["argv"][insts[0]["argv"].index("--ctx-size") + 1] == "768"
    assert 'corral_model_load_seconds_count{model="slow"} 1.0' in _metrics(daemon)


def test_keep_alive_sets_the_ttl_of_a_running_instance(daemon, client, tiny):
    import datetime

    assert client.chat(model="tiny", messages=[{"role": "user", "content": "x"}]).done
    [inst] = api(daemon, "GET", "/api/v1/instances")[1]
    assert inst["idle_ttl"] is None  # the router's default
    before = datetime.datetime.now(datetime.timezone.utc)
    msg = [{"role": "user", "content": "y"}]
    assert client.chat(model="tiny", messages=msg, keep_alive="10m").done
    [again] = api(daemon, "GET", "/api/v1/instances")[1]
    assert again["name"] == inst["name"] and again["pid"] == inst["pid"]  # the same process
    assert again["idle_ttl"] == 600
    [row] = client.ps().models
    left = (row.expires_at - before).total_seconds()
    assert 590 <= left <= 610, left
    # a user's instance too, for an admin (no key here: the local caller is one)
    status, user = api(
        daemon, "POST", "/api/v1/instances", {"model": tiny["path"], "name": "mine", "wait": True}
    )
    assert status == 201, user
    assert client.generate(model="mine", prompt="hi", keep_alive="1h").done
    assert api(daemon, "GET", "/api/v1/instances/mine")[1]["idle_ttl"] == 3600


def test_keep_alive_zero_unloads_and_the_router_forgets_the_instance(daemon, client, tiny):
    assert client.chat(model="tiny", messages=[{"role": "user", "content": "x"}]).done
    [inst] = api(daemon, "GET", "/api/v1/instances")[1]
    name = inst["name"]
    assert name in api(daemon, "GET", "/api/v1/usage")[1]["instances"]
    assert f'instance="{name}"' in _metrics(daemon)
    out = client.chat(model="tiny", messages=[{"role": "user", "content": "y"}], keep_alive=0)
    assert out.done
    wait_for(lambda: api(daemon, "GET", "/api/v1/instances")[1] == [], 10, message="unloaded")
    assert client.ps().models == []
    assert name not in api(daemon, "GET", "/api/v1/usage")[1]["instances"]
    text = _metrics(daemon)
    assert f'instance="{name}"' not in text, text
    assert 'corral_instances_retired_total{reason="unloaded"} 1.0' in text


def test_an_inference_keys_keep_alive_leaves_a_users_instance_as_it_is(daemon, tiny):
    """A user's instance is theirs: an inference key may use it, but its keep_alive (a
    TTL, or 0) neither sets the TTL nor unloads it; the router's own instances follow."""
    status, user = api(
        daemon, "POST", "/api/v1/instances", {"model": tiny["path"], "name": "mine", "wait": True}
    )
    assert status == 201, user
    status, made = api(daemon, "POST", "/api/v1/keys", {"name": "app", "scope": "inference"})
    assert status == 201
    bearer = {"Authorization": f"Bearer {made['secret']}"}
    with ollama.Client(host=daemon.settings.daemon_url, headers=bearer) as keyed:
        msg = [{"role": "user", "content": "x"}]
        assert keyed.chat(model="mine", messages=msg, keep_alive="1h").done
        assert keyed.chat(model="mine", messages=msg, keep_alive=0).done
        assert keyed.generate(model="mine", prompt="", keep_alive=0).done_reason == "unload"
    token = (daemon.settings.home / "daemon.token").read_text().strip()  # the admin's view
    after = api(
        daemon, "GET", "/api/v1/instances/mine", headers={"Authorization": f"Bearer {token}"}
    )[1]
    assert after["state"] == "ready" and after["pid"] == user["pid"]
    assert after["idle_ttl"] == user["idle_ttl"]


def test_generate_with_a_suffix_fills_in_the_middle(daemon, client, tiny):
    """Continue's Ollama autocomplete: ``/api/generate`` with ``suffix`` (and ``raw``) is
    relayed to llama-server's ``/infill``, streamed and not."""
    ask = {"model": "tiny", "prompt": "def f(", "suffix": "):\n", "raw": True}
    whole = client.generate(**ask, options={"num_predict": 3})
    assert whole.response and whole.done and whole.done_reason == "length"
    assert whole.eval_count == 3 and whole.prompt_eval_count > 0
    parts = list(client.generate(**ask, stream=True, options={"num_predict": 2}))
    assert "".join(p.response for p in parts[:-1]) and parts[-1].done
    assert parts[-1].eval_count == 2 and parts[-1].done_reason == "length"
    status, _, body = raw(
        daemon.settings.port, "POST", "/api/generate", b'{"model":"tiny","prompt":"x","suffix":7}'
    )
    assert status == 400 and "suffix must be a string" in json.loads(body)["error"]
