"""Who may call the daemon: API keys and scopes, and the rules that keep web pages out.

One pure ASGI middleware (:class:`Guard`) checks every request on the raw scope, in order:

1. ``Host`` names this daemon (loopback binds): a page on another site that resolves its
   name to 127.0.0.1 (DNS rebinding) sends its own name and is refused (403).
2. ``Origin``, when sent, is this daemon: cross-site fetches and forms are refused (403).
3. A state-changing request with a body is ``application/json`` (else 415): an HTML form
   can post without a CORS preflight, but only as urlencoded, multipart or text/plain.
4. A key, when one is required: always beyond loopback; on loopback as soon as an
   unrevoked key exists or CORRAL_API_KEY is set. Accepted: CORRAL_API_KEY and the local
   token in CORRAL_HOME/daemon.token (both admin), and keys from ``corral keys create``.
   An ``inference`` key may call only ``/v1/*``.

The guard leaves the caller's scope in ``scope["state"]`` (``openai.CALLER_SCOPE``) for
what comes after it, so nothing downstream reads keys again: ``admin`` for an admin key,
the local token or CORRAL_API_KEY, and for anyone when no key is required (a loopback
daemon without keys: whoever can reach it is its admin today); ``inference`` for an
inference key. The router lets only an admin start a stopped user instance.

Not ``@app.middleware("http")``: that is BaseHTTPMiddleware, which wraps every streamed
response in extra tasks and queues; the router's latency budget is a few milliseconds.
"""

from __future__ import annotations

import hmac
import json

from corral.api import errors
from corral.api.openai import CALLER_SCOPE, openai_error
from corral.keys import KeyRing, write_token
from corral.net import is_loopback
from corral.settings import Settings

#: Open to anyone, whatever the method.
OPEN_PATHS = ("/healthz",)
#: The web UI's static files, open to GET/HEAD so the UI can load and then ask for a key.
#: An entry ending in "/" is a prefix, except "/" itself, which is the root page only.
PUBLIC_PREFIXES = ("/", "/ui/", "/favicon.ico")
#: The OpenAI router: all an ``inference`` key may call.
INFERENCE_PREFIX = "/v1/"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error"}


def _allowed_hosts(settings: Settings) -> set[str] | None:
    """Host header values naming this daemon; None = any (bound beyond loopback, key required)."""
    if not is_loopback(settings.host):
        return None
    port = settings.port
    names = {"127.0.0.1", "localhost", "[::1]", settings.host.lower()}
    return {f"{n}:{port}" for n in names} | (names if port == 80 else set())


def is_public(method: str, path: str) -> bool:
    """Whether ``path`` is served without a key."""
    if path in OPEN_PATHS:
        return True
    if method not in ("GET", "HEAD"):
        return False
    return any(
        path == p or (p != "/" and p.endswith("/") and path.startswith(p)) for p in PUBLIC_PREFIXES
    )


def _bearer(value: str) -> str:
    scheme, _, credential = value.partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else ""


class Denied(Exception):
    """A request refused by the guard: status, stable code, one-line message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Guard:
    """The daemon's one security middleware (see the module docstring for the rules)."""

    def __init__(self, app, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.hosts = _allowed_hosts(settings)
        self.always_required = not is_loopback(settings.host)
        self.env_key = settings.api_key.encode()
        self.token = b""  # written at startup; empty never matches (see _admin)
        self._ring: KeyRing | None = None

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        try:
            self.check(scope)
        except Denied as denied:
            await _refuse(scope, send, denied)
            return
        await self.app(scope, receive, send)

    def _lifespan_send(self, send):
        async def relay(message) -> None:
            # After the app's own startup (home created, store migrated) and before the
            # server accepts connections: the token exists by the first request.
            if message["type"] == "lifespan.startup.complete":
                self.token = write_token(self.settings.home).encode()
                self.keyring()  # open the key store now rather than on a request
            elif message["type"] == "lifespan.shutdown.complete" and self._ring is not None:
                self._ring.close()
                self._ring = None
            await send(message)

        return relay

    def keyring(self) -> KeyRing:
        """The key store view, opened at startup (or at first use if the app runs without
        a lifespan, so the guard never falls open)."""
        if self._ring is None:
            self._ring = KeyRing(self.settings.db_path)
        return self._ring

    def check(self, scope) -> None:
        """Raise :class:`Denied` unless the request may pass."""
        head = {}
        for name, value in scope["headers"]:
            if name in (
                b"host",
                b"origin",
                b"authorization",
                b"content-type",
                b"content-length",
                b"transfer-encoding",
            ):
                head[name] = value.decode("latin-1")
        method = scope.get("method", "GET")  # a websocket handshake is a GET
        self._check_browser(method, head)
        caller = self._check_key(method, scope["path"], head.get(b"authorization", ""))
        state = scope.get("state")
        if not isinstance(state, dict):
            state = scope["state"] = {}
        if caller is None:
            state.pop(CALLER_SCOPE, None)  # only this guard says who calls
        else:
            state[CALLER_SCOPE] = caller

    def _check_browser(self, method: str, head: dict[bytes, str]) -> None:
        host = head.get(b"host", "").lower()
        if self.hosts is not None and host not in self.hosts:
            raise Denied(403, "forbidden_host", f"Host {host!r} is not this daemon")
        origin = head.get(b"origin")
        if origin is not None and origin.lower().split("://", 1)[-1] not in (self.hosts or {host}):
            raise Denied(403, "forbidden_origin", f"cross-origin request from {origin!r} refused")
        if method in MUTATING and (
            head.get(b"content-length", "0") != "0" or b"transfer-encoding" in head
        ):
            ctype = head.get(b"content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                raise Denied(
                    415,
                    "unsupported_media_type",
                    f"a request body must be application/json, not {ctype or 'untyped'}",
                )

    def _check_key(self, method: str, path: str, authorization: str) -> str | None:
        """The caller's scope (None on a public path, where no key is checked), or Denied."""
        if is_public(method, path):
            return None
        secret = _bearer(authorization)
        scope = self._scope_of(secret) if secret else None
        if scope is None:
            if self.always_required or self.env_key or self.keyring().any_active():
                raise Denied(
                    401, "unauthorized", "missing or wrong API key (Authorization: Bearer <key>)"
                )
            return "admin"  # no key required: whoever may call is the admin today
        if scope != "admin" and not path.startswith(INFERENCE_PREFIX):
            raise Denied(403, "forbidden", f"this {scope} key may only call {INFERENCE_PREFIX}*")
        return scope

    def _scope_of(self, secret: str) -> str | None:
        given = secret.encode()
        if self._admin(given, self.token) or self._admin(given, self.env_key):
            return "admin"
        grant = self.keyring().verify(secret)
        return grant.scope if grant else None

    @staticmethod
    def _admin(given: bytes, expected: bytes) -> bool:
        return bool(expected) and hmac.compare_digest(given, expected)


async def _refuse(scope, send, denied: Denied) -> None:
    if scope["type"] == "websocket":  # closing before accept answers the handshake with 403
        await send({"type": "websocket.close", "code": 1008})
        return
    if scope["path"].startswith(INFERENCE_PREFIX):  # OpenAI clients read OpenAI's shape
        payload = openai_error(
            denied.status, denied.message, _OPENAI_TYPES.get(denied.status, "invalid_request_error")
        )
    else:
        payload = errors.error_body(denied.code, denied.message)
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if denied.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": denied.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
