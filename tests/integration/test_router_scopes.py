"""Who may have the router start what, and instances that want their own API key.

Against a real ``corral serve`` and the fake llama-server, which enforces ``--api-key``
(and ``--api-key-file``, ``LLAMA_API_KEY``) like the real one: 401 without the key.
"""

from __future__ import annotations

import http.client
import json
import os
import socket

import pytest

from corral.settings import TOKEN_FILE
from tests.conftest import wait_for
from tests.integration.conftest import api, launch, wait_state

CHAT = "/v1/chat/completions"


def chat(daemon, model: str, secret: str | None = None, *, stream: bool = False):
    """(status, body) of one chat request through the router."""
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return api(daemon, "POST", CHAT, body, headers=headers)


def token(daemon) -> str:
    return (daemon.settings.home / TOKEN_FILE).read_text().strip()


def admin(daemon, method: str, path: str, body=None):
    """An admin call with the local token (once keys exist, plain calls get 401)."""
    status, payload = api(
        daemon, method, path, body, headers={"Authorization": f"Bearer {token(daemon)}"}
    )
    assert status < 300, (status, payload)
    return payload


def inference_key(daemon) -> str:
    status, made = api(daemon, "POST", "/api/v1/keys", {"name": "app", "scope": "inference"})
    assert status == 201, made
    return made["secret"]


def state_of(daemon, name: str) -> str:
    return admin(daemon, "GET", f"/api/v1/instances/{name}")["state"]


# -- item 3: an inference key does not undo an admin's stop ---------------------------------


def test_inference_key_cannot_restart_admin_stopped_instance(daemon, model_file):
    launch(daemon, model_file, name="mine")
    secret = inference_key(daemon)
    assert chat(daemon, "mine", secret)[0] == 200  # running: served to inference keys
    admin(daemon, "POST", "/api/v1/instances/mine/stop")

    status, body = chat(daemon, "mine", secret)
    assert status == 403, body
    assert body["error"]["type"] == "permission_error" and body["error"]["code"] == 403
    assert "admin" in body["error"]["message"] and "mine" in body["error"]["message"]
    status, body = chat(daemon, "mine", secret, stream=True)  # the stream path too
    assert status == 403, body
    assert state_of(daemon, "mine") == "stopped"

    # an admin's request (here the local token) may start it on demand
    status, body = chat(daemon, "mine", token(daemon))
    assert status == 200, body
    assert state_of(daemon, "mine") == "ready"


def test_loopback_daemon_without_keys_starts_a_stopped_instance_on_demand(daemon, model_file):
    launch(daemon, model_file, name="open")
    api(daemon, "POST", "/api/v1/instances/open/stop")
    status, body = chat(daemon, "open")  # no key exists: whoever calls is the admin today
    assert status == 200, body
    assert state_of(daemon, "open") == "ready"


def test_inference_key_still_starts_what_is_meant_for_the_router(daemon, make_model):
    idle = make_model("idler")
    indexed = make_model("indexed")
    assert daemon.cli("import", str(indexed)).returncode == 0
    [entry] = json.loads(daemon.cli("ls", "--json").stdout)
    launch(daemon, idle, name="idler", idle_ttl=1)
    secret = inference_key(daemon)

    status, body = chat(daemon, entry["name"], secret)  # an indexed model: started on demand
    assert status == 200, body

    # a user instance with its own idle TTL, stopped by the router: scale to zero and back
    wait_for(
        lambda: state_of(daemon, "idler") == "stopped",
        timeout=20,
        message="the idle user instance was stopped",
    )
    status, body = chat(daemon, "idler", secret)
    assert status == 200, body  # started again

    # ... but once an admin stops it (even after the router did), it is theirs
    wait_for(
        lambda: state_of(daemon, "idler") == "stopped",
        timeout=20,
        message="the idle user instance was stopped again",
    )
    admin(daemon, "POST", "/api/v1/instances/idler/stop")
    assert chat(daemon, "idler", secret)[0] == 403
    assert state_of(daemon, "idler") == "stopped"


# -- item 4: instances launched with an API key -------------------------------------------


def direct_chat(port: int, secret: str | None = None) -> int:
    """Status of a chat request straight to the instance (not through corral)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        body = json.dumps({"model": "x", "messages": [{"role": "user", "content": "x"}]})
        conn.request("POST", CHAT, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_router_sends_instance_api_key_upstream(daemon, model_file):
    inst = launch(daemon, model_file, name="keyed", flags=["--api-key", "k-first,k-second"])
    assert direct_chat(inst["port"]) == 401  # the instance does want a key
    assert direct_chat(inst["port"], "k-first") == 200
    status, body = chat(daemon, "keyed")
    assert status == 200, body
    assert body["choices"][0]["message"]["content"]
    status, body = chat(daemon, "keyed", stream=True)
    assert status == 200 and "data:" in body and "Invalid API Key" not in body, body


def test_router_sends_instance_key_from_its_env(daemon, model_file):
    inst = launch(daemon, model_file, name="envkeyed", env={"LLAMA_API_KEY": "from-env"})
    assert direct_chat(inst["port"]) == 401
    status, body = chat(daemon, "envkeyed")
    assert status == 200, body
    assert inst["env"] == {"LLAMA_API_KEY": "***"}


def test_router_reads_api_key_file_at_route_time(daemon, model_file, tmp_path):
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text("# issued for the test\n\nfile-key-1\nfile-key-2\n")
    inst = launch(daemon, model_file, name="filekeyed", flags=["--api-key-file", str(keyfile)])
    assert direct_chat(inst["port"]) == 401
    assert chat(daemon, "filekeyed")[0] == 200
    # rotated: the file now holds another key, and the instance is restarted to read it
    keyfile.write_text("rotated-file-key-3\n")
    admin(daemon, "POST", "/api/v1/instances/filekeyed/restart", None)
    wait_state(daemon, "filekeyed", "ready")
    assert direct_chat(inst["port"], "file-key-1") == 401  # the old key is gone upstream
    status, body = chat(daemon, "filekeyed")
    assert status == 200, body


def test_unreadable_api_key_file_is_a_clear_502(daemon, model_file, tmp_path):
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text("file-key\n")
    launch(daemon, model_file, name="lostkey", flags=["--api-key-file", str(keyfile)])
    assert chat(daemon, "lostkey")[0] == 200
    keyfile.unlink()
    status, body = chat(daemon, "lostkey")
    assert status == 502, body
    err = body["error"]
    assert err["code"] == 502 and err["type"] == "server_error"
    assert "lostkey" in err["message"] and str(keyfile) in err["message"]
    keyfile.write_text("# no key left here\n")
    status, body = chat(daemon, "lostkey")
    assert status == 502 and "no key" in body["error"]["message"], body


def test_api_key_masked_in_ps_and_api(daemon, model_file):
    secret = "sekrit-4f1e9c"
    events = EventTap(daemon)
    try:
        plan = api(
            daemon,
            "POST",
            "/api/v1/instances/plan",
            {"model": str(model_file), "flags": [f"--api-key={secret}"]},
        )[1]
        inst = launch(
            daemon,
            model_file,
            name="hidden",
            flags=["--api-key", secret],
            env={"HF_TOKEN": "hf_" + secret},
        )
        listed = api(daemon, "GET", "/api/v1/instances")[1]
        one = api(daemon, "GET", "/api/v1/instances/hidden")[1]
        seen = events.read_until(b'"ready"')
    finally:
        events.close()
    assert "***" in " ".join(plan["argv"]) and "--api-key" in plan["secret_flags"]
    assert "--api-key ***" in inst["flags"] and "***" in inst["argv"]
    ps_json = daemon.cli("ps", "--json")
    ps_table = daemon.cli("ps")
    assert ps_json.returncode == 0 and ps_table.returncode == 0
    assert "--api-key ***" in json.loads(ps_json.stdout)[0]["flags"]
    log_head = (daemon.settings.logs_dir / "hidden.log").read_text().splitlines()[0]
    assert "--api-key ***" in log_head
    for shown in (
        plan,
        inst,
        listed,
        one,
        ps_json.stdout,
        ps_table.stdout,
        log_head,
        seen.decode(),
    ):
        assert secret not in json.dumps(shown), shown
    # the record keeps it: the router calls the instance with it
    assert chat(daemon, "hidden")[0] == 200


class EventTap:
    """Reads the daemon's SSE event stream (GET /api/v1/events) on a raw socket."""

    def __init__(self, daemon) -> None:
        self.sock = socket.create_connection(("127.0.0.1", daemon.settings.port), timeout=30)
        self.sock.sendall(
            f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{daemon.settings.port}"
            "\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        self.data = b""
        while b": connected" not in self.data:  # subscribed before anything happens
            self.data += self.sock.recv(65536)

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.data:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.data += chunk
        return self.data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(autouse=True)
def _no_key_from_the_test_env(monkeypatch):
    # an inherited LLAMA_API_KEY would make every instance want a key
    for name in ("LLAMA_API_KEY", "LLAMA_ARG_API_KEY_FILE"):
        if name in os.environ:
            monkeypatch.delenv(name)
