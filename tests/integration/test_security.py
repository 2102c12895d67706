"""Auth and exposure against a real ``corral serve``: API keys, scopes, the local token,
binding beyond loopback, and the rules that keep web pages from driving the daemon.
"""

from __future__ import annotations

import http.client
import json
import stat
import subprocess
import sys

import openai
import pytest

from corral.keys import hash_secret, public_id
from corral.settings import TOKEN_FILE
from tests.conftest import DaemonProcess, free_port, wait_for
from tests.integration.conftest import api, assert_error, launch


def call(
    daemon, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], object]:
    """One request with exactly these headers; returns (status, headers, decoded body)."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.settings.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        head = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    try:
        return resp.status, head, json.loads(raw) if raw else None
    except ValueError:
        return resp.status, head, raw.decode(errors="replace")


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def create_key(daemon, name: str, *extra: str) -> str:
    proc = daemon.cli("keys", "create", name, *extra)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1, proc.stdout  # the secret alone: KEY=$(...) works
    assert "cannot be shown again" in proc.stderr, proc.stderr
    return proc.stdout.strip()


def key_id(daemon, secret: str) -> str:
    """The public id of ``secret``, as ``keys ls`` lists it."""
    listed = [k["id"] for k in json.loads(daemon.cli("keys", "ls", "--json").stdout)]
    assert public_id(secret) in listed, listed
    return public_id(secret)


def test_loopback_without_keys_is_open_and_the_token_file_is_private(daemon):
    assert api(daemon, "GET", "/api/v1/instances") == (200, [])
    assert api(daemon, "GET", "/v1/models")[0] == 200
    token = daemon.settings.home / TOKEN_FILE
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text().strip()) >= 40


def test_a_key_closes_the_api_and_the_cli_keeps_working(daemon, model_file):
    secret = create_key(daemon, "ci")
    # counted from the very next request: no waiting for a cache to expire
    status, head, body = call(daemon, "GET", "/api/v1/instances")
    assert_error(status, body, 401, "unauthorized")
    assert head["www-authenticate"] == "Bearer"
    assert_error(*call(daemon, "GET", "/api/v1/instances", headers=bearer("crl_wrong"))[::2], 401)
    assert_error(*call(daemon, "GET", "/metrics")[::2], 401)
    assert call(daemon, "GET", "/api/v1/instances", headers=bearer(secret))[::2] == (200, [])
    assert call(daemon, "GET", "/healthz")[0] == 200
    # the CLI on this machine authenticates with CORRAL_HOME/daemon.token
    run = daemon.cli("run", str(model_file), "--name", "viacli")
    assert run.returncode == 0, run.stderr
    ps = daemon.cli("ps", "--json")
    assert ps.returncode == 0, ps.stderr
    assert [i["name"] for i in json.loads(ps.stdout)] == ["viacli"]
    # and the key shows when it was last used
    [listed] = json.loads(daemon.cli("keys", "ls", "--json").stdout)
    assert listed["last_used_at"] is not None and listed["active"] is True


def test_the_local_token_is_new_at_each_daemon_start(daemon_env):
    first = DaemonProcess(daemon_env).start()
    try:
        create_key(first, "ci")
        old = (first.settings.home / TOKEN_FILE).read_text().strip()
        assert call(first, "GET", "/api/v1/instances", headers=bearer(old))[0] == 200
    finally:
        first.stop()
    second = DaemonProcess(daemon_env).start()
    try:
        new = (second.settings.home / TOKEN_FILE).read_text().strip()
        assert new != old
        assert call(second, "GET", "/api/v1/instances", headers=bearer(old))[0] == 401
        assert call(second, "GET", "/api/v1/instances", headers=bearer(new))[0] == 200
    finally:
        second.stop()


def test_an_inference_key_reaches_the_openai_api_only(daemon):
    status, made = api(daemon, "POST", "/api/v1/keys", {"name": "webapp", "scope": "inference"})
    assert status == 201 and made["scope"] == "inference" and made["secret"].startswith("crl_")
    secret = made["secret"]
    client = openai.OpenAI(
        base_url=daemon.settings.daemon_url + "/v1", api_key=secret, max_retries=0
    )
    assert client.models.list().object == "list"
    for method, path in (
        ("GET", "/api/v1/instances"),
        ("GET", "/api/v1/keys"),
        ("DELETE", f"/api/v1/keys/{made['id']}"),
    ):
        assert_error(*call(daemon, method, path, headers=bearer(secret))[::2], 403, "forbidden")
    # OpenAI clients get OpenAI's error shape
    with pytest.raises(openai.AuthenticationError) as denied:
        openai.OpenAI(
            base_url=daemon.settings.daemon_url + "/v1", api_key="crl_wrong", max_retries=0
        ).models.list()
    assert "API key" in denied.value.message
    status, _, body = call(daemon, "GET", "/v1/models")
    assert status == 401 and set(body["error"]) == {"message", "type", "code"}


def test_revoke_counts_in_the_running_daemon(daemon):
    keeper = create_key(daemon, "keeper")  # keeps the daemon closed while the others go
    by_cli = create_key(daemon, "cli-made")
    status, by_api = api(
        daemon, "POST", "/api/v1/keys", {"name": "api-made"}, headers=bearer(by_cli)
    )
    assert status == 201 and by_api["scope"] == "admin"
    for secret in (by_cli, by_api["secret"]):
        assert call(daemon, "GET", "/api/v1/instances", headers=bearer(secret))[0] == 200
    # revoke through the CLI (the store, another process) ...
    revoked = daemon.cli("keys", "revoke", key_id(daemon, by_cli))
    assert revoked.returncode == 0, revoked.stderr
    wait_for(
        lambda: call(daemon, "GET", "/api/v1/instances", headers=bearer(by_cli))[0] == 401,
        timeout=5,
        message="the revoked key refused",
    )
    # ... and through the API
    status, body = api(
        daemon, "DELETE", f"/api/v1/keys/{by_api['id']}", headers=bearer(by_api["secret"])
    )
    assert status == 200 and body["revoked_at"] is not None and body["active"] is False
    wait_for(
        lambda: (
            call(daemon, "GET", "/api/v1/instances", headers=bearer(by_api["secret"]))[0] == 401
        ),
        timeout=5,
        message="the revoked key refused",
    )
    assert call(daemon, "GET", "/api/v1/instances", headers=bearer(keeper))[0] == 200
    # with no active key left loopback is open again; revoked keys stay on record
    assert daemon.cli("keys", "revoke", key_id(daemon, keeper)).returncode == 0
    wait_for(
        lambda: call(daemon, "GET", "/api/v1/instances")[0] == 200,
        timeout=5,
        message="loopback open again",
    )
    status, listed = api(daemon, "GET", "/api/v1/keys")
    assert status == 200 and [k["active"] for k in listed] == [False, False, False]
    assert_error(*api(daemon, "DELETE", "/api/v1/keys/key_nothere"), 404, "not_found")


def test_secrets_are_in_no_listing_and_no_file(daemon):
    secrets_ = [create_key(daemon, "one"), create_key(daemon, "two", "--scope", "inference")]
    status, made = api(
        daemon, "POST", "/api/v1/keys", {"name": "three"}, headers=bearer(secrets_[0])
    )
    assert status == 201
    secrets_.append(made["secret"])
    listing = daemon.cli("keys", "ls", "--json")
    status, api_listing = api(daemon, "GET", "/api/v1/keys", headers=bearer(secrets_[0]))
    assert status == 200 and len(api_listing) == 3
    assert all(
        set(k) == {"id", "name", "scope", "created_at", "last_used_at", "revoked_at", "active"}
        for k in api_listing
    )
    table = daemon.cli("keys", "ls")
    files = [p for p in daemon.settings.home.rglob("*") if p.is_file()]
    assert any(p.name.startswith("corral.db") for p in files)
    for secret in secrets_:
        for text in (listing.stdout, table.stdout, json.dumps(api_listing)):
            assert secret not in text and hash_secret(secret) not in text
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
    stored = b"".join(p.read_bytes() for p in files if p.name.startswith("corral.db"))
    assert all(hash_secret(s).encode() in stored for s in secrets_)


def test_bad_key_requests_are_400(daemon):
    assert_error(*api(daemon, "POST", "/api/v1/keys", {"name": ""}), 400, "bad_request")
    assert_error(*api(daemon, "POST", "/api/v1/keys", {"name": "x", "scope": "root"}), 400)
    assert_error(*api(daemon, "POST", "/api/v1/keys", {"name": "a\u0007b"}), 400)
    assert api(daemon, "GET", "/api/v1/keys") == (200, [])


def serve_proc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "corral", "serve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serving_beyond_loopback_needs_a_key(daemon_env, corral_home):
    port = free_port()
    env = {**daemon_env, "CORRAL_PORT": str(port), "CORRAL_URL": f"http://127.0.0.1:{port}"}
    refused = serve_proc(env, "--host", "0.0.0.0")
    assert refused.returncode == 2, refused.stderr
    assert "corral keys create" in refused.stderr and "Traceback" not in refused.stderr
    made = subprocess.run(
        [sys.executable, "-m", "corral", "keys", "create", "lan"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    secret = made.stdout.strip()
    assert made.returncode == 0 and secret.startswith("crl_"), made.stderr
    d = DaemonProcess({**env, "CORRAL_HOST": "0.0.0.0"}).start()  # reached via 127.0.0.1 only
    try:
        assert call(d, "GET", "/healthz")[0] == 200
        assert call(d, "GET", "/api/v1/instances")[0] == 401
        # beyond loopback any Host is fine (the LAN name), with a key
        assert (
            call(
                d,
                "GET",
                "/api/v1/instances",
                headers={"Host": f"corral.lan:{port}", **bearer(secret)},
            )[0]
            == 200
        )
        ps = d.cli("ps", "--json")  # the CLI through the local token
        assert ps.returncode == 0 and json.loads(ps.stdout) == [], ps.stderr
        # with every key revoked a key is still required: the bind decides, not the store
        assert d.cli("keys", "revoke", key_id(d, secret)).returncode == 0
        wait_for(
            lambda: call(d, "GET", "/api/v1/instances", headers=bearer(secret))[0] == 401,
            timeout=5,
            message="the revoked key refused",
        )
        assert call(d, "GET", "/api/v1/instances")[0] == 401
    finally:
        d.stop()


def test_web_pages_cannot_drive_the_daemon(daemon, model_file):
    port = daemon.settings.port
    launch(daemon, model_file, name="victim")
    # DNS rebinding: the page's own name in Host
    for path in ("/healthz", "/api/v1/instances", "/v1/models"):
        assert call(daemon, "GET", path, headers={"Host": f"evil.example:{port}"})[0] == 403
    # a cross-site fetch or form carries its Origin
    status, _, body = call(
        daemon, "POST", "/api/v1/instances/victim/stop", headers={"Origin": "http://evil.example"}
    )
    assert_error(status, body, 403, "forbidden_origin")
    # an HTML form posts without a preflight, but never as JSON
    form = json.dumps({"model": str(model_file), "name": "formed"}).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded"):
        status, _, body = call(daemon, "POST", "/api/v1/instances", form, {"Content-Type": ctype})
        assert_error(status, body, 415, "unsupported_media_type")
    status, _, body = call(
        daemon, "POST", "/v1/chat/completions", b"{}", {"Content-Type": "text/plain"}
    )
    assert status == 415 and body["error"]["type"] == "invalid_request_error"
    status, listed = api(daemon, "GET", "/api/v1/instances")
    assert [i["name"] for i in listed] == ["victim"] and listed[0]["state"] == "ready"
    # bodyless POSTs stay allowed, and /healthz stays open
    status, _, body = call(daemon, "POST", "/api/v1/instances/victim/stop")
    assert status == 200, body
    assert call(daemon, "GET", "/healthz")[0] == 200


def test_browser_rules_hold_with_a_key_too(daemon):
    secret = create_key(daemon, "ci")
    port = daemon.settings.port
    good = bearer(secret)
    assert (
        call(daemon, "GET", "/api/v1/keys", headers={"Host": f"evil.example:{port}", **good})[0]
        == 403
    )
    assert (
        call(
            daemon,
            "POST",
            "/api/v1/keys",
            b'{"name": "x"}',
            {"Origin": "http://evil.example", "Content-Type": "application/json", **good},
        )[0]
        == 403
    )
    assert (
        call(
            daemon, "POST", "/api/v1/keys", b'{"name": "x"}', {"Content-Type": "text/plain", **good}
        )[0]
        == 415
    )
    assert len(api(daemon, "GET", "/api/v1/keys", headers=good)[1]) == 1
    assert call(daemon, "GET", "/healthz")[0] == 200
