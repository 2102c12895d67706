"""The fake llama-server behaves like the real one where tests rely on it, and faults on demand."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes import (  # noqa: E402
    FAKE_LLAMA_SERVER,
    HELP_TEXT_PATH,
    VERSION_TEXT_PATH,
    make_fake_binary,
)

HOST = "127.0.0.1"
LOADING_BODY = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
BIND_ERROR = "couldn't bind HTTP server socket, hostname: 127.0.0.1, port: {port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Fake:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ):
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            hdrs = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, payload
        finally:
            conn.close()

    def json(self, method: str, path: str, body: object = None, **kw):
        status, payload = self.request(method, path, body, **kw)
        return status, json.loads(payload)

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_text()
            try:
                status, _ = self.request("GET", "/health", timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError("fake never became ready:\n" + self.log_text())

    def wait_exit(self, timeout: float = 5.0) -> int:
        return self.proc.wait(timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
def spawn(tmp_path):
    procs: list[subprocess.Popen] = []
    counter = iter(range(1000))

    def _spawn(
        *extra: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        model: Path | None | bool = True,
        binary: Path | None = None,
    ) -> Fake:
        port = free_port() if port is None else port
        n = next(counter)
        if model is True:
            model = tmp_path / f"model{n}.gguf"
            model.write_bytes(b"GGUF-fake")
        args = ["--port", str(port), "--host", HOST, *extra]
        if model:
            args = ["-m", str(model), *args]
        cmd = [str(binary), *args] if binary else [sys.executable, str(FAKE_LLAMA_SERVER), *args]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_LLAMA_")}
        full_env.update(env or {})
        log = tmp_path / f"fake{n}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=full_env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        procs.append(proc)
        return Fake(proc, port, log)

    yield _spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=5)


def run_fake(*args: str, binary: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [str(binary), *args] if binary else [sys.executable, str(FAKE_LLAMA_SERVER), *args]
    return subprocess.run(cmd, capture_output=True, timeout=10, stdin=subprocess.DEVNULL)


def test_help_and_version_match_the_captured_text(tmp_path):
    binary = make_fake_binary(tmp_path)
    assert os.access(binary, os.X_OK)
    res = run_fake("--help", binary=binary)
    assert res.returncode == 0
    assert res.stdout.decode() == HELP_TEXT_PATH.read_text()
    assert res.stderr == b""
    res = run_fake("--version", binary=binary)
    assert res.returncode == 0
    assert res.stderr.decode() == VERSION_TEXT_PATH.read_text()
    assert res.stdout == b""


def test_binary_process_is_the_fake_with_all_args(spawn, tmp_path):
    binary = make_fake_binary(tmp_path / "bin")
    fake = spawn("-c", "2048", "--alias", "tiny,alpha", "--jinja", binary=binary)
    fake.wait_ready()
    _, state = fake.json("GET", "/_fake/state")
    assert state["pid"] == fake.proc.pid
    cmdline = Path(f"/proc/{fake.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert str(binary).encode() in cmdline
    for arg in (b"-c", b"2048", b"--alias", b"tiny,alpha", b"--jinja", b"--port"):
        assert arg in cmdline
    # the real server keeps aliases sorted; the first one names the model
    _, models = fake.json("GET", "/v1/models")
    assert models["data"][0]["id"] == "alpha"
    assert models["object"] == "list"


def test_flags_are_parsed_like_the_real_parser(spawn):
    # valued flags take their next token even when it looks like a flag value ("-1")
    fake = spawn(
        "-ngl",
        "99",
        "--temp",
        "-1",
        "-ot",
        "x=CPU",
        "--jinja",
        "-a",
        "m1",
        "--control-vector-layer-range",
        "1",
        "2",
    )
    fake.wait_ready()
    _, state = fake.json("GET", "/_fake/state")
    assert state["model"] == "m1" and state["port"] == fake.port


def test_strict_args_rejects_unknown_flags_like_the_real_one(tmp_path):
    env = {**os.environ, "FAKE_LLAMA_STRICT_ARGS": "1"}
    for bad in ("--bogus-flag", "--port=8080"):
        res = subprocess.run(
            [sys.executable, str(FAKE_LLAMA_SERVER), "--jinja", bad],
            capture_output=True,
            timeout=10,
            env=env,
        )
        assert res.returncode == 1
        assert res.stderr.decode() == f"error: invalid argument: {bad}\n"


def test_health_is_503_while_loading_then_200(spawn):
    fake = spawn(env={"FAKE_LLAMA_LOAD_SECONDS": "0.6"})
    deadline = time.monotonic() + 5
    seen_loading = False
    while time.monotonic() < deadline:
        try:
            status, body = fake.request("GET", "/health", timeout=1)
        except OSError:
            time.sleep(0.01)
            continue
        if status == 503:
            assert json.loads(body) == LOADING_BODY
            seen_loading = True
        else:
            assert status == 200
            assert json.loads(body) == {"status": "ok"}
            break
        time.sleep(0.02)
    else:
        raise AssertionError("never ready")
    assert seen_loading
    assert f"listening on http://127.0.0.1:{fake.port}" in fake.log_text()


def test_streaming_chat_yields_chunks_then_done(spawn):
    fake = spawn(env={"FAKE_LLAMA_TOKENS": "5", "FAKE_LLAMA_TOKEN_DELAY": "0.01"})
    fake.wait_ready()
    conn = http.client.HTTPConnection(HOST, fake.port, timeout=5)
    body = {"model": "x", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("text/event-stream")
    events = [ln for ln in resp.read().decode().split("\n\n") if ln]
    conn.close()
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    content = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert len(content) == 5 and all(content)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["timings"]["predicted_n"] == 5


def test_completions_models_embeddings_and_errors(spawn):
    fake = spawn("--embeddings", env={"FAKE_LLAMA_TOKENS": "4", "FAKE_LLAMA_TOKEN_DELAY": "0"})
    fake.wait_ready()
    status, res = fake.json(
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert status == 200
    assert res["object"] == "chat.completion"
    assert res["choices"][0]["finish_reason"] == "length"
    assert res["usage"]["completion_tokens"] == 2
    assert res["usage"]["total_tokens"] == res["usage"]["prompt_tokens"] + 2
    assert res["timings"]["predicted_n"] == 2
    status, res = fake.json("POST", "/v1/completions", {"prompt": "once upon"})
    assert status == 200 and res["object"] == "text_completion"
    assert res["choices"][0]["finish_reason"] == "stop" and res["usage"]["completion_tokens"] == 4
    status, res = fake.json("POST", "/v1/embeddings", {"input": ["a", "b"]})
    assert status == 200 and len(res["data"]) == 2
    again = fake.json("POST", "/v1/embeddings", {"input": ["a", "b"]})[1]
    assert again["data"] == res["data"]
    status, res = fake.json("POST", "/v1/chat/completions", raw=b"{not json")
    assert status == 400
    assert res["error"]["type"] == "invalid_request_error" and res["error"]["code"] == 400
    status, res = fake.json("GET", "/nope")
    assert status == 404 and res["error"]["type"] == "not_found_error"
    _, state = fake.json("GET", "/_fake/state")
    assert state["requests"] >= 5 and state["loading"] is False


def test_embeddings_need_the_flag_like_the_real_server(spawn):
    fake = spawn()
    fake.wait_ready()
    status, res = fake.json("POST", "/v1/embeddings", {"input": "a"})
    assert status == 501 and res["error"]["type"] == "not_supported_error"


def test_api_key_is_enforced_except_on_health(spawn):
    fake = spawn("--api-key", "sekrit")
    fake.wait_ready()
    status, res = fake.json("GET", "/v1/models")
    assert status == 401 and res["error"]["type"] == "authentication_error"
    status, _ = fake.request("GET", "/v1/models", headers={"Authorization": "Bearer sekrit"})
    assert status == 200


def test_sidecar_config_is_read_and_env_overrides_it(spawn, tmp_path):
    model = tmp_path / "side.gguf"
    model.write_bytes(b"GGUF")
    Path(str(model) + ".fake.json").write_text(json.dumps({"tokens": 3, "token_delay": 0}))
    fake = spawn(model=model)
    fake.wait_ready()
    _, res = fake.json("POST", "/v1/completions", {"prompt": "x"})
    assert res["usage"]["completion_tokens"] == 3
    fake2 = spawn(model=model, env={"FAKE_LLAMA_TOKENS": "1"})
    fake2.wait_ready()
    _, res = fake2.json("POST", "/v1/completions", {"prompt": "x"})
    assert res["usage"]["completion_tokens"] == 1


def test_client_disconnect_cancels_the_stream(spawn):
    fake = spawn(env={"FAKE_LLAMA_TOKENS": "400", "FAKE_LLAMA_TOKEN_DELAY": "0.01"})
    fake.wait_ready()
    sock = socket.create_connection((HOST, fake.port), timeout=5)
    body = json.dumps({"prompt": "x", "stream": True}).encode()
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    received = b""
    while b"data: " not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    sock.close()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        _, state = fake.json("GET", "/_fake/state")
        if state["cancelled"] == 1:
            break
        time.sleep(0.05)
    assert state["cancelled"] == 1 and state["in_flight"] == 0


def test_crash_endpoint_exits_with_the_code(spawn):
    fake = spawn()
    fake.wait_ready()
    status, res = fake.json("POST", "/_fake/crash?code=7")
    assert status == 200
    assert fake.wait_exit() == 7


def test_exit_during_load(spawn):
    fake = spawn(env={"FAKE_LLAMA_EXIT_DURING_LOAD": "3", "FAKE_LLAMA_LOAD_SECONDS": "0.2"})
    assert fake.wait_exit() == 3
    assert "exiting due to model loading error" in fake.log_text()


def test_missing_model_file_fails_like_the_real_one(spawn, tmp_path):
    fake = spawn(model=tmp_path / "missing.gguf")
    assert fake.wait_exit() == 1
    assert "failed to open GGUF file" in fake.log_text()


def test_hang_blocks_health_but_port_accepts(spawn):
    fake = spawn()
    fake.wait_ready()
    assert fake.request("POST", "/_fake/hang")[0] == 200
    with pytest.raises(TimeoutError):
        fake.request("GET", "/health", timeout=0.5)
    with socket.create_connection((HOST, fake.port), timeout=1):
        pass
    assert fake.proc.poll() is None
    fake.proc.send_signal(signal.SIGTERM)  # a hung fake still obeys SIGTERM
    assert fake.wait_exit() == 0


def test_hang_knob_hangs_after_ready(spawn):
    fake = spawn(env={"FAKE_LLAMA_HANG": "1", "FAKE_LLAMA_LOAD_SECONDS": "0.1"})
    deadline = time.monotonic() + 5
    while "listening on" not in fake.log_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    with pytest.raises(TimeoutError):
        fake.request("GET", "/health", timeout=0.5)


def test_sigterm_and_sigint_exit_zero(spawn):
    for sig in (signal.SIGTERM, signal.SIGINT):
        fake = spawn()
        fake.wait_ready()
        t0 = time.monotonic()
        fake.proc.send_signal(sig)
        assert fake.wait_exit() == 0
        assert time.monotonic() - t0 < 2
        assert "cleaning up before exit" in fake.log_text()


@pytest.mark.parametrize("how", ["env", "endpoint"])
def test_ignore_sigterm_survives_sigterm_dies_on_sigkill(spawn, how):
    fake = spawn(env={"FAKE_LLAMA_IGNORE_SIGTERM": "1"} if how == "env" else {})
    fake.wait_ready()
    if how == "endpoint":
        assert fake.request("POST", "/_fake/ignore-sigterm")[0] == 200
    fake.proc.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        fake.proc.wait(timeout=0.4)
    assert fake.request("GET", "/health")[0] == 200
    fake.proc.send_signal(signal.SIGKILL)
    assert fake.wait_exit() == -signal.SIGKILL


def test_fail_bind_knob_exits_1_with_the_message(spawn):
    fake = spawn(env={"FAKE_LLAMA_FAIL_BIND": "1"})
    assert fake.wait_exit() == 1
    assert BIND_ERROR.format(port=fake.port) in fake.log_text()
    assert "exiting due to HTTP server error" in fake.log_text()


def test_really_taken_port_exits_1_with_the_message(spawn):
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind((HOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        fake = spawn(port=port)
        assert fake.wait_exit() == 1
    assert BIND_ERROR.format(port=port) in fake.log_text()


def test_port_taken_by_another_fake(spawn):
    first = spawn()
    first.wait_ready()
    second = spawn(port=first.port)
    assert second.wait_exit() == 1
    assert first.proc.poll() is None
