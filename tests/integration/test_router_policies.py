"""Router policies against a real daemon and fake llama-servers: idle TTL, LRU eviction,
pinning, in-flight protection, bounded queues, load heartbeats, crash mid-stream, usage
counters, /metrics and the event stream."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import threading
import time
import urllib.request
from pathlib import Path

import openai
import pytest

from tests.conftest import DaemonProcess, running_daemon, wait_for


def make_gguf(directory: Path, name: str, **fake) -> Path:
    """A valid (tiny) GGUF file, with fake-server behaviour in its sidecar."""
    import gguf

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-Q4_K_M.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_file_type(15)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    if fake:
        (directory / (path.name + ".fake.json")).write_text(json.dumps(fake))
    return path


@pytest.fixture
def start_daemon(daemon_env):
    """Start a daemon with extra settings; every one started is stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(**settings) -> DaemonProcess:
            env = dict(daemon_env)
            env.update({f"CORRAL_{k.upper()}": str(v) for k, v in settings.items()})
            return stack.enter_context(running_daemon(env))

        yield start


def import_models(d: DaemonProcess, directory: Path, *names: str, **fake) -> list[str]:
    for name in names:
        make_gguf(directory, name, **fake)
    out = d.cli("import", str(directory), "--json")
    assert out.returncode == 0, out.stderr
    by_file = {Path(m["path"]).name: m["name"] for m in json.loads(d.cli("ls", "--json").stdout)}
    return [by_file[f"{n}-Q4_K_M.gguf"] for n in names]


def client(d: DaemonProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=d.settings.daemon_url + "/v1", api_key="unused", max_retries=0, timeout=60
    )


def chat(d: DaemonProcess, model: str, text: str = "hi") -> str:
    with client(d) as c:
        r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
    return r.choices[0].message.content


def live(d: DaemonProcess) -> dict[str, dict]:
    return {i["name"]: i for i in d.client.request("GET", "/api/v1/instances")}


def post_raw(d: DaemonProcess, body: dict, timeout: float = 30):
    conn = http.client.HTTPConnection("127.0.0.1", d.settings.port, timeout=timeout)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    return conn, conn.getresponse()


def test_hundred_concurrent_requests_start_one_instance_and_all_succeed(start_daemon, tmp_path):
    d = start_daemon()
    [model] = import_models(d, tmp_path / "m", "crowd", load_seconds=1.0)

    def ask(i):
        return chat(d, model, str(i))

    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(ask, range(100)))
    assert len(answers) == 100 and all(answers)
    assert [i["origin"] for i in live(d).values()] == ["router"]
    usage = d.client.request("GET", "/api/v1/usage")
    assert usage["models"][model]["requests"] == 100
    assert usage["models"][model]["errors"] == 0


def test_idle_ttl_stops_a_router_instance_but_not_a_user_one(start_daemon, tmp_path):
    d = start_daemon(idle_ttl=1.0)
    routed, launched = import_models(d, tmp_path / "m", "idle", "kept")
    out = d.cli("run", launched, "--name", "mine")
    assert out.returncode == 0, out.stderr
    assert chat(d, routed)
    [name] = [n for n, i in live(d).items() if i["origin"] == "router"]
    wait_for(lambda: name not in live(d), timeout=15, message="idle instance stopped")
    assert live(d)["mine"]["state"] == "ready"  # launched by the user: no TTL unless given
    # the next request brings it back
    assert chat(d, routed)
    assert any(i["origin"] == "router" for i in live(d).values())


def test_lru_eviction_order_under_the_cap(start_daemon, tmp_path):
    d = start_daemon(router_max_instances=2)
    a, b, c = import_models(d, tmp_path / "m", "alpha", "bravo", "charlie")
    chat(d, a)
    chat(d, b)
    chat(d, a)  # b is now the least recently used
    chat(d, c)
    names = {i["model"].rsplit("/", 1)[-1] for i in live(d).values()}
    assert names == {"alpha-Q4_K_M.gguf", "charlie-Q4_K_M.gguf"}
    chat(d, b)  # evicts alpha (used before charlie)
    names = {i["model"].rsplit("/", 1)[-1] for i in live(d).values()}
    assert names == {"bravo-Q4_K_M.gguf", "charlie-Q4_K_M.gguf"}


def test_pinned_instance_is_never_evicted(start_daemon, tmp_path):
    d = start_daemon(router_max_instances=1)
    path = make_gguf(tmp_path / "m", "pinned")
    make_gguf(tmp_path / "m", "other")
    assert d.cli("import", str(tmp_path / "m")).returncode == 0
    d.client.request("PUT", "/api/v1/presets/keeper", {"model": str(path), "pinned": True})
    assert chat(d, "keeper")
    other = next(
        m["name"]
        for m in json.loads(d.cli("ls", "--json").stdout)
        if m["path"].endswith("other-Q4_K_M.gguf")
    )
    with pytest.raises(openai.APIStatusError) as err:
        chat(d, other)
    assert err.value.status_code == 503
    assert err.value.response.headers.get("retry-after")
    assert "pinned" in err.value.message
    [inst] = live(d).values()
    assert inst["preset"] == "keeper" and inst["pinned"] and inst["state"] == "ready"


def test_an_instance_with_a_request_in_flight_is_not_evicted(start_daemon, tmp_path):
    d = start_daemon(router_max_instances=1)
    slow, quick = import_models(d, tmp_path / "m", "slow", "quick")
    (tmp_path / "m" / "slow-Q4_K_M.gguf.fake.json").write_text(
        json.dumps({"tokens": 300, "token_delay": 0.01})
    )
    conn, resp = post_raw(
        d, {"model": slow, "stream": True, "messages": [{"role": "user", "content": "long"}]}
    )
    assert resp.status == 200
    resp.read1(100)  # the slow stream is flowing
    with pytest.raises(openai.APIStatusError) as err:
        chat(d, quick)
    assert err.value.status_code == 503 and "busy" in err.value.message
    rest = resp.read()  # let it finish
    conn.close()
    assert b"[DONE]" in rest
    assert chat(d, quick)  # now the slow one is idle and can go
    assert [i["model"].rsplit("/", 1)[-1] for i in live(d).values()] == ["quick-Q4_K_M.gguf"]


def test_streaming_clients_get_heartbeats_while_the_model_loads(start_daemon, tmp_path):
    d = start_daemon(router_heartbeat=0.2)
    [model] = import_models(d, tmp_path / "m", "loading", load_seconds=2.0)
    conn, resp = post_raw(
        d, {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    text = resp.read().decode()
    conn.close()
    beats = [line for line in text.splitlines() if line.startswith(": loading")]
    assert len(beats) >= 2, text[:500]
    assert text.index(": loading") < text.index("data: {")
    assert "data: [DONE]" in text


def test_queue_limit_and_load_timeout_answer_503_with_retry_after(start_daemon, tmp_path):
    d = start_daemon(router_queue_limit=2)
    [model] = import_models(d, tmp_path / "m", "queued", load_seconds=3.0)
    results = []

    def ask():
        try:
            results.append(chat(d, model))
        except openai.APIStatusError as exc:
            results.append((exc.status_code, exc.response.headers.get("retry-after")))

    threads = [threading.Thread(target=ask) for _ in range(5)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join(60)
    refused = [r for r in results if isinstance(r, tuple)]
    assert len(results) == 5 and len(refused) == 3, results
    assert all(code == 503 and after for code, after in refused)


def test_load_wait_is_bounded(start_daemon, tmp_path):
    d = start_daemon(router_queue_timeout=0.5)
    [model] = import_models(d, tmp_path / "m", "sluggish", load_seconds=4.0)
    with pytest.raises(openai.APIStatusError) as err:
        chat(d, model)
    assert err.value.status_code == 503 and "still loading" in err.value.message
    assert err.value.response.headers.get("retry-after")
    wait_for(
        lambda: any(i["state"] == "ready" for i in live(d).values()),
        timeout=20,
        message="the load went on in the background",
    )
    assert chat(d, model)


def test_instance_dying_mid_stream_ends_it_with_an_error_event(start_daemon, tmp_path):
    d = start_daemon()
    [model] = import_models(d, tmp_path / "m", "fragile", tokens=500, token_delay=0.02)
    assert chat(d, model, "warm")
    [inst] = live(d).values()
    c = client(d)
    stream = c.chat.completions.create(
        model=model, stream=True, messages=[{"role": "user", "content": "long"}]
    )
    got = []
    with c, stream, pytest.raises(openai.APIError) as err:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
            if len(got) == 3:
                urllib.request.urlopen(
                    urllib.request.Request(
                        f"http://127.0.0.1:{inst['port']}/_fake/crash?code=9", method="POST"
                    ),
                    timeout=5,
                ).close()
    assert len(got) >= 3
    assert "failed mid-response" in str(err.value)
    usage = d.client.request("GET", "/api/v1/usage")["instances"][inst["name"]]
    assert usage["errors"] == 1


def test_usage_counters_and_prometheus_metrics(start_daemon, tmp_path):
    d = start_daemon()
    [model] = import_models(d, tmp_path / "m", "counted", tokens=7)
    for _ in range(3):
        assert chat(d, model)
    with (
        client(d) as c,
        c.chat.completions.create(
            model=model, stream=True, messages=[{"role": "user", "content": "s"}]
        ) as stream,
    ):
        assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    # counted when the upstream answer has ended, a moment after the client saw [DONE]
    m = wait_for(
        lambda: (
            (u := d.client.request("GET", "/api/v1/usage")["models"][model])["requests"] == 4 and u
        ),
        message="all four requests counted",
    )
    assert m["errors"] == 0
    assert m["tokens_out"] == 4 * 7 and m["tokens_in"] > 0
    assert m["tokens_per_second"] and m["tokens_per_second"] > 0
    with urllib.request.urlopen(d.settings.daemon_url + "/metrics", timeout=10) as r:
        assert r.headers["content-type"].startswith("text/plain")
        text = r.read().decode()
    [inst] = live(d)
    assert (
        f'corral_requests_total{{endpoint="chat/completions",instance="{inst}",'
        f'model="{model}",status="200"}} 4.0'
    ) in text
    assert f'corral_completion_tokens_total{{model="{model}"}} 28.0' in text
    assert f'corral_time_to_first_token_seconds_count{{model="{model}"}} 4.0' in text
    assert (
        f'corral_instance_state{{instance="{inst}",model="counted-Q4_K_M.gguf",state="ready"}} 1.0'
        in text
    )
    assert f'corral_model_load_seconds_count{{model="{model}"}} 1.0' in text
    assert "corral_queue_depth" in text


def test_event_stream_carries_instance_and_router_events(start_daemon, tmp_path):
    d = start_daemon()
    [model] = import_models(d, tmp_path / "m", "watched")
    conn = http.client.HTTPConnection("127.0.0.1", d.settings.port, timeout=30)
    conn.request("GET", "/api/v1/events")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.readline().startswith(b": connected")
    seen: list[tuple[str, dict]] = []

    def read_events():
        topic = None
        while True:
            try:
                line = resp.readline()
            except (AttributeError, OSError, ValueError):  # closed by the test at its end
                return
            if not line:
                return
            line = line.decode().rstrip("\n")
            if line.startswith("event: "):
                topic = line[7:]
            elif line.startswith("data: "):
                seen.append((topic, json.loads(line[6:])))

    reader = threading.Thread(target=read_events, daemon=True)
    reader.start()
    assert chat(d, model)
    wait_for(
        lambda: any(t == "instance" and e.get("state") == "ready" for t, e in seen),
        timeout=10,
        message="instance ready event",
    )
    assert any(t == "router" and e["type"] == "starting" for t, e in seen)
    states = [e["state"] for t, e in seen if t == "instance" and e["type"] == "state"]
    assert states.index("starting") < states.index("ready")
    conn.close()


def test_expect_100_continue_is_answered_by_the_daemon_not_relayed(start_daemon, tmp_path):
    d = start_daemon()
    [model] = import_models(d, tmp_path / "m", "expecting")
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", d.settings.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=body,
            headers={"Content-Type": "application/json", "Expect": "100-continue"},
        )
        resp = conn.getresponse()  # http.client skips the 100 itself
        assert resp.status == 200
        assert json.loads(resp.read())["choices"][0]["message"]["content"]
    finally:
        conn.close()


def test_a_failed_on_demand_load_leaves_no_instance_behind(start_daemon, tmp_path):
    d = start_daemon()
    [model] = import_models(d, tmp_path / "m", "broken", exit_during_load=3, load_seconds=0.4)
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as err:
            chat(d, model)
        assert err.value.status_code == 502 and "broken" in err.value.message
    assert live(d) == {}  # no failed leftovers holding names and ports


def test_a_client_leaving_a_non_streaming_request_stops_generation(start_daemon, tmp_path):
    d = start_daemon()
    [model] = import_models(d, tmp_path / "m", "patient", tokens=400, token_delay=0.02)
    assert d.cli("run", model).returncode == 0  # ready before the request: no load to wait for
    [inst] = live(d).values()
    conn = http.client.HTTPConnection("127.0.0.1", d.settings.port, timeout=30)
    conn.request(
        "POST",
        "/v1/chat/completions",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]}),
    )
    time.sleep(0.5)  # generating; no response head yet (it comes with the whole answer)
    conn.close()

    def state():
        with urllib.request.urlopen(f"http://127.0.0.1:{inst['port']}/_fake/state", timeout=5) as r:
            return json.loads(r.read())

    # the fake, like llama-server, stops a non-streaming generation whose connection closed
    wait_for(
        lambda: state().get("cancelled", 0) >= 1,
        timeout=15,
        message="upstream saw the client leave",
    )
    with urllib.request.urlopen(d.settings.daemon_url + "/metrics", timeout=10) as r:
        assert f'instance="{inst["name"]}",model="{model}",status="499"}} 1.0' in r.read().decode()
    usage = d.client.request("GET", "/api/v1/usage")["instances"][inst["name"]]
    assert usage["in_flight"] == 0
    assert usage["errors"] == 0  # a client leaving is not the server's error


def test_a_client_leaving_while_its_model_loads_frees_its_queue_place(start_daemon, tmp_path):
    d = start_daemon(router_queue_limit=1)
    [model] = import_models(d, tmp_path / "m", "slowload", load_seconds=3.0)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]})
    conn = http.client.HTTPConnection("127.0.0.1", d.settings.port, timeout=30)
    conn.request(
        "POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"}
    )
    time.sleep(0.5)
    conn.close()  # left while the model loads
    time.sleep(0.3)
    assert chat(d, model)  # the only place in the queue is free again


def test_an_evicted_instance_leaves_no_metric_series_behind(start_daemon, tmp_path):
    d = start_daemon(router_max_instances=1)
    first, second = import_models(d, tmp_path / "m", "former", "latter")
    assert chat(d, first) and chat(d, second)  # the second start evicts the first

    with urllib.request.urlopen(d.settings.daemon_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert f'instance="{second}"' in text
    assert f'instance="{first}"' not in text
    assert 'corral_instances_retired_total{reason="evicted"} 1.0' in text


def test_embeddings_through_the_openai_client(start_daemon, tmp_path):
    d = start_daemon()
    [model] = import_models(d, tmp_path / "m", "embedder", embeddings=True)
    with client(d) as c:
        out = c.embeddings.create(model=model, input=["one", "two"])
    assert [e.index for e in out.data] == [0, 1]
    assert all(len(e.embedding) > 0 for e in out.data)
    assert out.data[0].embedding != out.data[1].embedding
    usage = d.client.request("GET", "/api/v1/usage")["models"][model]
    assert usage["requests"] == 1 and usage["tokens_in"] > 0


def test_a_name_cached_for_one_instance_follows_a_new_instance_of_that_name(start_daemon, tmp_path):
    d = start_daemon()
    first, other = import_models(d, tmp_path / "m", "cachedmodel", "othermodel")
    prefix = first[:6]  # a unique prefix of the first model: resolved, then cached
    assert chat(d, prefix) and chat(d, prefix)  # started on demand; then found ready, cached
    assert d.cli("run", other, "--name", prefix).returncode == 0  # now an instance has that name
    chat(d, prefix)
    usage = d.client.request("GET", "/api/v1/usage")["instances"]
    assert usage[prefix]["requests"] == 1  # a live instance's own name comes first
