"""API keys (corral.keys), the local token, the security guard and the client's credentials.

The guard is driven as the ASGI app it is, with a recording inner app, so every rule is
checked on the exact scope uvicorn would hand it.
"""

from __future__ import annotations

import asyncio
import json
import re
import stat

import pytest

from corral import keys
from corral.api.security import PUBLIC_PREFIXES, Guard, is_public
from corral.client import TOKEN_FILE, Client
from corral.errors import NotFound, UsageError
from corral.settings import Settings
from corral.store.db import Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "corral.db")
    yield s
    s.close()


# --------------------------------------------------------------------------- the key table


def test_create_shows_the_secret_once_and_stores_only_its_hash(store, tmp_path):
    key, secret = keys.create_key(store, " laptop ", "inference")
    assert re.fullmatch(r"crl_[A-Za-z0-9_-]{43}", secret)
    assert key.id == "key_" + secret[4:12] and key.name == "laptop" and key.scope == "inference"
    [row] = store.query("SELECT * FROM api_keys")
    assert row["hash"] == keys.hash_secret(secret) and secret not in tuple(row)
    [listed] = keys.list_keys(store)
    assert listed.to_dict() == {
        "id": key.id,
        "name": "laptop",
        "scope": "inference",
        "created_at": key.created_at,
        "last_used_at": None,
        "revoked_at": None,
        "active": True,
    }
    store.close()  # checkpoints the WAL into the main file
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("corral.db*"))
    assert secret.encode() not in raw and keys.hash_secret(secret).encode() in raw


def test_each_key_gets_its_own_secret_and_id(store):
    made = [keys.create_key(store, "same-name") for _ in range(5)]
    assert len({s for _, s in made}) == 5 and len({k.id for k, _ in made}) == 5
    assert [k.scope for k, _ in made] == ["admin"] * 5


@pytest.mark.parametrize(
    "name,scope",
    [("", "admin"), ("   ", "admin"), ("x" * 65, "admin"), ("tab\there", "admin"), ("ok", "root")],
)
def test_bad_name_or_scope_is_a_usage_error(store, name, scope):
    with pytest.raises(UsageError):
        keys.create_key(store, name, scope)
    assert keys.list_keys(store) == []


def test_revoke_keeps_the_row_and_is_idempotent(store):
    key, _ = keys.create_key(store, "ci")
    assert keys.active_count(store) == 1
    revoked = keys.revoke_key(store, key.id)
    assert revoked.revoked_at is not None and not revoked.active
    assert keys.revoke_key(store, key.id).revoked_at == revoked.revoked_at
    assert [k.id for k in keys.list_keys(store)] == [key.id]
    assert keys.active_count(store) == 0
    with pytest.raises(NotFound, match="key_nope"):
        keys.revoke_key(store, "key_nope")


# --------------------------------------------------------------------------- the daemon's view


def test_keyring_sees_new_keys_at_once_and_revocations_within_a_recheck(store):
    import time

    ring = keys.KeyRing(store.path)
    try:
        assert not ring.any_active()
        key, secret = keys.create_key(store, "ci", "inference")  # another connection
        assert ring.verify(secret) == keys.Grant(key.id, "inference")  # a miss looks again
        assert ring.any_active()
        assert ring.verify(secret + "x") is None and ring.verify("") is None
        keys.revoke_key(store, key.id)
        time.sleep(keys.RECHECK)
        assert ring.verify(secret) is None
        assert not ring.any_active()
    finally:
        ring.close()


def test_keyring_stamps_last_use_at_most_once_a_minute(store):
    now = [1_000_000.0]
    ring = keys.KeyRing(store.path, clock=lambda: now[0])
    try:
        key, secret = keys.create_key(store, "ci")
        assert ring.verify(secret)
        assert keys.get_key(store, key.id).last_used_at == 1_000_000.0
        now[0] += 30
        assert ring.verify(secret)
        assert keys.get_key(store, key.id).last_used_at == 1_000_000.0
        now[0] += 31
        assert ring.verify(secret)
        assert keys.get_key(store, key.id).last_used_at == 1_000_061.0
    finally:
        ring.close()


def test_token_file_is_private_fresh_and_replaced_whole(tmp_path):
    first = keys.write_token(tmp_path)
    path = tmp_path / TOKEN_FILE
    assert path.read_text().strip() == first and len(first) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = keys.write_token(tmp_path)
    assert second != first and path.read_text().strip() == second
    assert sorted(p.name for p in tmp_path.iterdir()) == [TOKEN_FILE]


# --------------------------------------------------------------------------- the guard


def test_public_paths():
    assert PUBLIC_PREFIXES == ("/", "/ui/", "/favicon.ico")
    for method, path in [
        ("GET", "/"),
        ("HEAD", "/"),
        ("GET", "/ui/app.js"),
        ("GET", "/favicon.ico"),
        ("GET", "/healthz"),
        ("POST", "/healthz"),
    ]:
        assert is_public(method, path), (method, path)
    for method, path in [
        ("GET", "/api/v1/instances"),
        ("GET", "/v1/models"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("POST", "/"),
        ("POST", "/ui/x"),
        ("GET", "/favicon.ico/x"),
        ("GET", "/uix"),
    ]:
        assert not is_public(method, path), (method, path)


class Harness:
    """Drive a Guard over a recording app; ``call`` returns (status, headers, body)."""

    def __init__(self, settings: Settings) -> None:
        self.reached: list[str] = []

        async def inner(scope, receive, send):
            if scope["type"] == "lifespan":
                await receive()
                await send({"type": "lifespan.startup.complete"})
                await receive()
                await send({"type": "lifespan.shutdown.complete"})
                return
            self.reached.append(scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        self.guard = Guard(inner, settings)
        self.port = settings.port

    def lifespan(self) -> None:
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        sent: list[str] = []

        async def receive():
            return next(messages)

        async def send(message):
            sent.append(message["type"])

        asyncio.run(self.guard({"type": "lifespan"}, receive, send))
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    def call(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], dict | str]:
        hdrs = {"host": f"127.0.0.1:{self.port}", **(headers or {})}
        if body:
            hdrs.setdefault("content-length", str(len(body)))
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "headers": [(k.lower().encode(), v.encode()) for k, v in hdrs.items()],
        }
        out: list[dict] = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            out.append(message)

        asyncio.run(self.guard(scope, receive, send))
        start, end = out
        raw = end["body"]
        head = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], head, (json.loads(raw) if raw != b"ok" else "ok")


@pytest.fixture
def settings(tmp_path):
    s = Settings(home=tmp_path / "home", port=9555)
    s.ensure_dirs()
    return s


def test_guard_open_loopback_then_closed_once_a_key_exists(settings):
    h = Harness(settings)
    h.lifespan()
    token = (settings.home / TOKEN_FILE).read_text().strip()
    assert h.call("GET", "/api/v1/instances")[0] == 200
    store = Store(settings.db_path)
    try:
        _, secret = keys.create_key(store, "ci")
    finally:
        store.close()
    import time

    time.sleep(keys.RECHECK)  # the guard looks for new keys at most this often
    status, head, body = h.call("GET", "/api/v1/instances")
    assert (status, head["www-authenticate"], body["error"]["code"]) == (
        401,
        "Bearer",
        "unauthorized",
    )
    status, _, body = h.call("GET", "/v1/models", {"authorization": "Bearer nope"})
    assert status == 401 and body["error"]["type"] == "authentication_error"
    assert set(body["error"]) == {"message", "type", "code"}
    for credential in (secret, token):
        assert (
            h.call("GET", "/api/v1/instances", {"authorization": f"Bearer {credential}"})[0] == 200
        )
        assert (
            h.call("GET", "/api/v1/instances", {"authorization": f"bearer {credential}"})[0] == 200
        )
        assert h.call("GET", "/api/v1/instances", {"authorization": credential})[0] == 401
    assert h.call("GET", "/healthz")[0] == 200 and h.call("GET", "/")[0] == 200
    assert h.reached.count("/api/v1/instances") == 5


def test_guard_env_key_and_scopes(settings):
    settings.api_key = "env-secret"
    h = Harness(settings)
    assert h.call("GET", "/api/v1/instances")[0] == 401
    assert h.call("GET", "/api/v1/instances", {"authorization": "Bearer env-secret"})[0] == 200
    store = Store(settings.db_path)
    try:
        _, inference = keys.create_key(store, "app", "inference")
    finally:
        store.close()
    bearer = {"authorization": f"Bearer {inference}"}
    assert h.call("GET", "/v1/models", bearer)[0] == 200
    for method, path in [
        ("GET", "/api/v1/instances"),
        ("POST", "/api/v1/keys"),
        ("GET", "/metrics"),
    ]:
        status, _, body = h.call(method, path, bearer)
        assert (status, body["error"]["code"]) == (403, "forbidden"), path
    assert h.reached == ["/api/v1/instances", "/v1/models"]


def test_guard_refuses_what_a_web_page_could_send(settings):
    h = Harness(settings)
    port = settings.port
    assert h.call("GET", "/healthz", {"host": f"evil.example:{port}"})[0] == 403
    assert h.call("GET", "/api/v1/instances", {"host": f"localhost:{port}"})[0] == 200
    status, _, body = h.call("POST", "/api/v1/instances/x/stop", {"origin": "http://evil.example"})
    assert (status, body["error"]["code"]) == (403, "forbidden_origin")
    assert h.call("POST", "/api/v1/instances/x/stop", {"origin": "null"})[0] == 403
    for ctype in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; b=x",
        "",
    ):
        headers = {"content-type": ctype} if ctype else {}
        status, _, body = h.call("POST", "/api/v1/instances", headers, body=b'{"model": "m"}')
        assert (status, body["error"]["code"]) == (415, "unsupported_media_type"), ctype
    chunked = {"transfer-encoding": "chunked", "content-type": "text/plain"}
    assert h.call("PUT", "/api/v1/presets/p", chunked)[0] == 415
    assert h.call("POST", "/v1/chat/completions", {"content-type": "text/plain"}, b"{}")[0] == 415
    ok = {"content-type": "application/json; charset=utf-8"}
    assert h.call("POST", "/api/v1/instances", ok, body=b"{}")[0] == 200
    assert h.call("POST", "/api/v1/instances/x/stop", {"content-type": "text/plain"})[0] == 200
    assert (
        h.call("POST", "/api/v1/instances/x/stop", {"origin": f"http://127.0.0.1:{port}"})[0] == 200
    )
    assert h.reached == [
        "/api/v1/instances",
        "/api/v1/instances",
        "/api/v1/instances/x/stop",
        "/api/v1/instances/x/stop",
    ]


def test_guard_beyond_loopback_always_wants_a_key_and_takes_any_host(settings):
    settings.host = "0.0.0.0"
    h = Harness(settings)
    h.lifespan()
    token = (settings.home / TOKEN_FILE).read_text().strip()
    assert h.call("GET", "/api/v1/instances", {"host": "corral.lan:9555"})[0] == 401
    assert h.call("GET", "/healthz", {"host": "corral.lan:9555"})[0] == 200
    assert (
        h.call(
            "GET",
            "/api/v1/instances",
            {"host": "corral.lan:9555", "authorization": f"Bearer {token}"},
        )[0]
        == 200
    )
    assert (
        h.call(
            "GET",
            "/api/v1/instances",
            {
                "host": "corral.lan:9555",
                "origin": "http://evil.example",
                "authorization": f"Bearer {token}",
            },
        )[0]
        == 403
    )


# --------------------------------------------------------------------------- the client


def test_client_sends_the_env_key_else_the_local_token(settings):
    settings.url = f"http://127.0.0.1:{settings.port}"
    assert "Authorization" not in Client(settings)._headers(False)
    token = keys.write_token(settings.home)
    assert Client(settings)._headers(True) == {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
    }
    settings.api_key = "env-secret"
    assert Client(settings)._headers(False)["Authorization"] == "Bearer env-secret"


def test_client_never_sends_the_local_token_to_another_machine(settings):
    keys.write_token(settings.home)
    for url in ("http://192.168.1.9:9380", "http://127.example.com:9380", "http://corral.lan"):
        settings.url = url
        assert "Authorization" not in Client(settings)._headers(False), url
    settings.api_key = "env-secret"
    assert Client(settings)._headers(False)["Authorization"] == "Bearer env-secret"
