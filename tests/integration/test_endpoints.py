"""Every llama-server inference path through the router (issue 13, items 1 and 4).

Against a real ``corral serve`` and fake llama-servers that record each request they
receive (``/_fake/requests``), so the tests see what reached which instance: the path,
the ``model``, the headers.
"""

from __future__ import annotations

import http.client
import json
import urllib.request

import pytest

from corral.api.paths import ROUTES
from tests.conftest import wait_for
from tests.integration.conftest import api, fake_get, launch

MESSAGES = [{"role": "user", "content": "hi there"}]
#: A body each endpoint accepts (the model is added per request).
BODIES = {
    "chat/completions": {"messages": MESSAGES},
    "completions": {"prompt": "hi"},
    "completion": {"prompt": "hi"},
    "responses": {"input": "hi"},
    "chat/completions/input_tokens": {"messages": MESSAGES},
    "responses/input_tokens": {"input": "hi"},
    "messages": {"max_tokens": 16, "messages": MESSAGES},
    "messages/count_tokens": {"messages": MESSAGES},
    "infill": {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n"},
    "embeddings": {"input": "hi"},
    "embedding": {"content": "hi"},
    "rerank": {"query": "blue sky", "documents": ["sky is blue", "grass"]},
    "reranking": {"query": "blue sky", "documents": ["sky is blue", "grass"]},
    "tokenize": {"content": "hi there"},
    "detokenize": {"tokens": []},
    "apply-template": {"messages": MESSAGES},
}
BOUNDARY = "corral-test-boundary"


def multipart(fields: dict[str, str], audio: bytes = b"RIFF\x00\x01fake-wav") -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n".encode()
        + audio
        + b"\r\n"
    )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def post(daemon, path: str, model: str | None, headers: dict | None = None, **extra):
    """(status, body) of one routed request with a body that path accepts."""
    route = ROUTES[path]
    if route.kind == "multipart":
        fields = {"model": model} if model else {}
        return api(
            daemon,
            "POST",
            path,
            raw=multipart(fields),
            headers={
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                **(headers or {}),
            },
        )
    body = {**BODIES[route.label], **extra}
    if model is not None:
        body["model"] = model
    return api(daemon, "POST", path, body, headers=headers)


def received(port: int) -> list[dict]:
    status, got = fake_get(port, "/_fake/requests")
    assert status == 200
    return got


@pytest.fixture
def two(daemon, model_file):
    """Two instances of the fake that serve every endpoint: alpha and beta."""
    flags = ["--embeddings", "--reranking"]
    return {n: launch(daemon, model_file, name=n, flags=flags) for n in ("alpha", "beta")}


def test_every_routed_path_reaches_the_instance_its_model_names(daemon, two):
    for path in ROUTES:
        status, body = post(daemon, path, "beta")
        assert status == 200, (path, body)
    beta = {r["path"]: r for r in received(two["beta"]["port"])}
    assert set(ROUTES) <= set(beta), set(ROUTES) - set(beta)
    assert all(beta[p]["model"] == "beta" for p in ROUTES)
    assert not set(ROUTES) & {r["path"] for r in received(two["alpha"]["port"])}


def test_answers_name_the_model_the_client_used(daemon, two):
    assert two["alpha"]["argv"][7:9] == ["--alias", "alpha"]
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/responses", "/completion"):
        status, body = post(daemon, path, "alpha")
        assert status == 200 and body["model"] == "alpha", (path, body)


def test_claude_codes_query_string_is_routed_like_the_path(daemon, model_file):
    inst = launch(daemon, model_file, name="cc")
    body = {"model": "cc", "max_tokens": 4, "messages": MESSAGES}
    status, answer = api(daemon, "POST", "/v1/messages?beta=true", body)
    assert status == 200 and answer["type"] == "message", answer
    status, answer = api(daemon, "POST", "/v1/messages/count_tokens?beta=true", body)
    assert status == 200 and answer["input_tokens"] > 0
    paths = [r["path"] for r in received(inst["port"])]
    assert paths[-2:] == ["/v1/messages", "/v1/messages/count_tokens"]


def test_a_users_own_alias_is_kept(daemon, model_file):
    inst = launch(daemon, model_file, name="own", flags=["--alias", "served-as"])
    argv = inst["argv"]
    assert argv.count("--alias") == 1 and argv[argv.index("--alias") + 1] == "served-as"
    status, body = post(daemon, "/v1/chat/completions", "own")
    assert status == 200 and body["model"] == "served-as"


def test_without_model_the_only_running_instance_answers(daemon, model_file):
    status, body = post(daemon, "/tokenize", None)
    assert status == 400 and "no instance is running" in body["error"]["message"], body
    solo = launch(daemon, model_file, name="solo")
    for path in ("/tokenize", "/v1/chat/completions", "/v1/audio/transcriptions"):
        status, body = post(daemon, path, None)
        assert status == 200, (path, body)
    assert {r["path"] for r in received(solo["port"])} >= {"/tokenize", "/v1/chat/completions"}
    launch(daemon, model_file, name="other")
    status, body = post(daemon, "/v1/chat/completions", None)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    msg = body["error"]["message"]
    assert "2 instances are running" in msg and "solo" in msg and "other" in msg
    status, body = post(daemon, "/v1/messages", None)  # Anthropic's shape there
    assert status == 400 and body["type"] == "error", body
    assert body["error"]["type"] == "invalid_request_error" and "solo" in body["error"]["message"]


def test_multipart_transcription_is_forwarded_untouched(daemon, model_file):
    inst = launch(daemon, model_file, name="ears")
    audio = bytes(range(256)) * 40
    status, body = api(
        daemon,
        "POST",
        "/v1/audio/transcriptions",
        raw=multipart({"model": "ears", "language": "en"}, audio),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert status == 200 and body["text"] == f"fake transcription of {len(audio)} bytes"
    [rec] = [r for r in received(inst["port"]) if r["path"] == "/v1/audio/transcriptions"]
    assert rec["model"] == "ears"
    # multipart is for that path only: elsewhere the guard wants JSON (forms cannot send it)
    status, body = api(
        daemon,
        "POST",
        "/v1/chat/completions",
        raw=multipart({"model": "ears"}),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert status == 415, body
    status, body = api(  # a broken form is a 400, not a 500
        daemon,
        "POST",
        "/v1/audio/transcriptions",
        raw=b"not multipart at all",
        headers={"Content-Type": "multipart/form-data"},
    )
    assert status == 400 and "boundary" in body["error"]["message"]


def key(daemon, scope: str) -> str:
    status, made = api(daemon, "POST", "/api/v1/keys", {"name": f"k-{scope}", "scope": scope})
    assert status == 201, made
    return made["secret"]


def test_x_api_key_is_a_key_and_never_goes_upstream(daemon, model_file):
    inst = launch(daemon, model_file, name="keyed", flags=["--embeddings", "--reranking"])
    secret = key(daemon, "inference")
    # the first key closes the open loopback within 0.25 s
    status, body = wait_for(
        lambda: (got := post(daemon, "/v1/messages", "keyed"))[0] == 401 and got,
        message="keys required",
    )
    assert status == 401 and body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": body["error"]["message"]},
    }
    assert "x-api-key" in body["error"]["message"]
    for path in ROUTES:  # an inference key may use every routed path
        status, body = post(daemon, path, "keyed", headers={"x-api-key": secret})
        assert status == 200, (path, body)
    status, body = post(daemon, "/tokenize", "keyed", headers={"Authorization": "Bearer " + secret})
    assert status == 200
    for rec in received(inst["port"]):
        assert "x-api-key" not in rec["headers"] and "authorization" not in rec["headers"]
    # but not corral's own API, nor the Ollama API's admin calls, each in its shape
    status, body = api(daemon, "GET", "/api/v1/instances", headers={"x-api-key": secret})
    assert status == 403 and isinstance(body["error"], dict) and body["error"]["code"]
    status, body = api(daemon, "POST", "/api/pull", {"model": "x"}, headers={"x-api-key": secret})
    assert status == 403 and isinstance(body["error"], str), body
    status, body = api(daemon, "GET", "/api/tags", headers={"x-api-key": "crl_wrong"})
    assert status == 401 and isinstance(body["error"], str), body
    status, body = api(daemon, "POST", "/v1/messages", {}, headers={"x-api-key": "crl_wrong"})
    assert status == 401 and body["error"]["type"] == "authentication_error"


def test_anthropic_errors_take_anthropics_shape(daemon, model_file):
    launch(daemon, model_file, name="ant")
    cases = [
        ({"model": "nope", "max_tokens": 4, "messages": MESSAGES}, 404, "not_found_error"),
        ({"model": 7, "max_tokens": 4, "messages": MESSAGES}, 400, "invalid_request_error"),
        # llama-server would answer these with a 500: corral checks first
        ({"model": "ant", "max_tokens": 4}, 400, "invalid_request_error"),
        ({"model": "ant", "max_tokens": 4, "messages": "hi"}, 400, "invalid_request_error"),
    ]
    for body, status, typ in cases:
        got, answer = api(daemon, "POST", "/v1/messages", body)
        assert got == status and answer["type"] == "error", answer
        assert answer["error"]["type"] == typ and answer["error"]["message"]
    got, answer = api(daemon, "POST", "/v1/messages/count_tokens", raw=b"{nope")
    assert got == 400 and answer["error"]["type"] == "invalid_request_error", answer
    got, answer = api(daemon, "POST", "/v1/messages", raw=b"[1, 2]")
    assert got == 400 and answer["type"] == "error"
    # the same mistakes on OpenAI's paths keep OpenAI's shape
    got, answer = api(daemon, "POST", "/infill", {"model": "nope"})
    assert got == 404 and answer["error"]["type"] == "invalid_request_error"
    assert "type" not in answer
    got, answer = api(daemon, "POST", "/tokenize", {"model": ["a"]})
    assert got == 400 and "must be a string" in answer["error"]["message"]


def sse_events(resp) -> list[tuple[str | None, dict]]:
    events, name = [], None
    for raw in resp:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
            name = None
    return events


def test_anthropic_stream_dying_mid_answer_ends_with_an_error_event(daemon, model_file):
    model_file.with_name(model_file.name + ".fake.json").write_text(
        json.dumps({"tokens": 400, "token_delay": 0.02})
    )
    inst = launch(daemon, model_file, name="fragile")
    conn = http.client.HTTPConnection("127.0.0.1", daemon.settings.port, timeout=30)
    body = {"model": "fragile", "max_tokens": 1000, "stream": True, "messages": MESSAGES}
    conn.request("POST", "/v1/messages", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.readline().startswith(b"event: message_start")
    urllib.request.urlopen(
        urllib.request.Request(
            f"http://127.0.0.1:{inst['port']}/_fake/crash?code=9", method="POST"
        ),
        timeout=5,
    ).close()
    events = sse_events(resp)
    conn.close()
    name, last = events[-1]
    assert name == "error" and last["type"] == "error", events[-3:]
    assert (
        last["error"]["type"] == "api_error" and "failed mid-response" in last["error"]["message"]
    )


def test_anthropic_usage_is_counted(daemon, model_file):
    launch(daemon, model_file, name="count")
    for stream in (False, True):
        status, _ = api(
            daemon,
            "POST",
            "/v1/messages",
            {"model": "count", "max_tokens": 5, "stream": stream, "messages": MESSAGES},
        )
        assert status == 200
    usage = wait_for(
        lambda: (
            (u := api(daemon, "GET", "/api/v1/usage")[1]["instances"]["count"])["requests"] == 2
            and u
        ),
        message="both counted",
    )
    assert usage["tokens_out"] == 10 and usage["tokens_in"] >= 2 * 4


@pytest.fixture
def indexed(daemon, tmp_path) -> str:
    import gguf

    path = tmp_path / "ggufs" / "listed-Q4_K_M.gguf"
    path.parent.mkdir()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_file_type(15)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    out = daemon.cli("import", str(path), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(daemon.cli("ls", "--json").stdout)[0]["name"]


def test_models_list_each_id_once_and_paths_only_for_admins(daemon, indexed):
    status, _ = api(
        daemon, "POST", "/v1/chat/completions", {"model": indexed, "messages": MESSAGES}
    )
    assert status == 200  # a router instance of the same name now runs
    status, listing = api(daemon, "GET", "/v1/models")
    ids = [m["id"] for m in listing["data"]]
    assert ids.count(indexed) == 1, listing
    [entry] = [m for m in listing["data"] if m["id"] == indexed]
    assert entry["kind"] == "instance" and entry["state"] == "ready"
    assert entry["model_path"].endswith("listed-Q4_K_M.gguf")  # admin (no key exists)
    secret = key(daemon, "inference")
    status, listing = api(daemon, "GET", "/v1/models", headers={"x-api-key": secret})
    assert status == 200 and listing["data"]
    assert all("model_path" not in m for m in listing["data"]), listing
    assert "ggufs" not in json.dumps(listing)


def test_openai_sdk_on_the_new_paths(daemon, two):
    import openai

    c = openai.OpenAI(
        base_url=daemon.settings.daemon_url + "/v1", api_key="unused", max_retries=0, timeout=60
    )
    reply = c.responses.create(model="beta", input="hi")
    assert reply.output_text and reply.model == "beta" and reply.usage.output_tokens > 0
    # create(stream=True), not the stream() helper: llama-server's events carry no
    # output_index/content_index, which the helper needs (the real server's shape)
    events = list(c.responses.create(model="beta", input="hi", stream=True))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == reply.output_text and events[-1].type == "response.completed"
    assert c.responses.input_tokens.count(model="beta", input="hi").input_tokens > 0
    heard = c.audio.transcriptions.create(model="beta", file=("a.wav", b"RIFF0000WAVE"))
    assert heard.text == "fake transcription of 12 bytes"
    vectors = c.embeddings.create(model="beta", input=["a", "b", "c"])
    assert [d.index for d in vectors.data] == [0, 1, 2]
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model="nope", input="hi")
    paths = [r["path"] for r in received(two["beta"]["port"])]
    assert {"/v1/responses", "/v1/responses/input_tokens", "/v1/audio/transcriptions"} <= set(paths)
