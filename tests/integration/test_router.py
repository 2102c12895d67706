"""The OpenAI-compatible router, driven by the official openai client, against a real
daemon and fake llama-servers started on demand."""

from __future__ import annotations

import concurrent.futures
import json
import urllib.request

import openai
import pytest

from tests.conftest import wait_for


@pytest.fixture
def indexed(daemon, tmp_path) -> str:
    """A valid GGUF imported into the index; returns its model name."""
    import gguf

    path = tmp_path / "ggufs" / "routed-Q4_K_M.gguf"
    path.parent.mkdir()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_file_type(15)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    out = daemon.cli("import", str(path), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(daemon.cli("ls", "--json").stdout)[0]["name"]


def client(daemon) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=daemon.settings.daemon_url + "/v1", api_key="unused", max_retries=0, timeout=60
    )


def instances(daemon) -> list[dict]:
    return daemon.client.request("GET", "/api/v1/instances")


def test_models_list_and_on_demand_chat(daemon, indexed):
    c = client(daemon)
    ids = {m.id: m for m in c.models.list().data}
    assert indexed in ids
    reply = c.chat.completions.create(model=indexed, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens > 0
    [inst] = instances(daemon)
    assert inst["state"] == "ready" and inst["name"] == indexed
    # the running instance answers by its own name too, without a second start
    again = c.chat.completions.create(
        model=inst["name"], messages=[{"role": "user", "content": "x"}]
    )
    assert again.choices[0].message.content and len(instances(daemon)) == 1


def test_streaming_chat_is_relayed_chunk_by_chunk(daemon, indexed):
    stream = client(daemon).chat.completions.create(
        model=indexed, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    pieces = [
        ch.choices[0].delta.content for ch in stream if ch.choices and ch.choices[0].delta.content
    ]
    assert len(pieces) >= 2


def test_concurrent_requests_start_exactly_one_instance(daemon, indexed):
    c = client(daemon)

    def ask(i):
        r = c.chat.completions.create(model=indexed, messages=[{"role": "user", "content": str(i)}])
        return r.choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, range(40)))
    assert all(answers)
    assert len(instances(daemon)) == 1


def test_errors_keep_the_openai_shape(daemon, indexed):
    c = client(daemon)
    with pytest.raises(openai.NotFoundError) as err:
        c.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert "not a preset and not in the index" in err.value.message
    req = urllib.request.Request(
        daemon.settings.daemon_url + "/v1/chat/completions",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(req, timeout=10)
    assert bad.value.code == 400
    assert json.loads(bad.value.read())["error"]["type"] == "invalid_request_error"
    # an upstream error keeps its status and body: the fake refuses embeddings like the real one
    with pytest.raises(openai.APIStatusError) as up:
        c.embeddings.create(model=indexed, input="hello")
    assert up.value.status_code == 501 and "--embeddings" in up.value.message


def test_client_disconnect_stops_generation_upstream(daemon, indexed, tmp_path):
    import http.client

    sidecar = tmp_path / "ggufs" / "routed-Q4_K_M.gguf.fake.json"
    sidecar.write_text(json.dumps({"tokens": 400, "token_delay": 0.02}))
    c = client(daemon)
    c.chat.completions.create(model=indexed, messages=[{"role": "user", "content": "warm"}])
    [inst] = instances(daemon)
    # a long, slow stream; read a little, then hang up
    body = json.dumps(
        {
            "model": indexed,
            "stream": True,
            "max_tokens": 500,
            "messages": [{"role": "user", "content": "long"}],
        }
    ).encode()
    conn = http.client.HTTPConnection("127.0.0.1", daemon.settings.port, timeout=30)
    conn.request(
        "POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    assert resp.status == 200
    resp.read1(200)
    conn.close()

    def cancelled():
        with urllib.request.urlopen(f"http://127.0.0.1:{inst['port']}/_fake/state", timeout=5) as r:
            return json.loads(r.read()).get("cancelled", 0) >= 1

    wait_for(cancelled, timeout=15, message="upstream saw the disconnect")
