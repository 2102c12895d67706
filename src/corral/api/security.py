"""Who may call the daemon: API keys and scopes, and the rules that keep web pages out.

One pure ASGI middleware (:class:`Guard`) checks every request on the raw scope, in order:

1. ``Host`` names this daemon (loopback binds), on its port or on its Ollama port
   (setting ``ollama_port``): a page on another site that resolves its name to 127.0.0.1
   (DNS rebinding) sends its own name and is refused (403).
2. ``Origin``, when sent, is this daemon: cross-site fetches and forms are refused (403).
3. A state-changing request with a body is ``application/json`` (else 415): an HTML form
   can post without a CORS preflight, but only as urlencoded, multipart or text/plain.
   The exceptions: multipart on the transcription paths (OpenAI's API takes the audio
   file so; a form posted there from another site still carries its ``Origin``), and any
   type on the Ollama API's paths when no ``Origin`` is sent (``curl -d``, as Ollama's
   documentation calls it; browsers send an ``Origin`` with every POST).
4. A key, when one is required: always beyond loopback; on loopback as soon as an
   unrevoked key exists or CORRAL_API_KEY is set. Accepted: CORRAL_API_KEY and the local
   token in CORRAL_HOME/daemon.token (both admin), and keys from ``corral keys create``,
   sent as ``Authorization: Bearer <key>`` or (Anthropic's clients) ``x-api-key: <key>``.
   An ``inference`` key may call only the inference paths (:func:`is_inference`):
   ``/v1/*``, every routed llama-server path (:data:`corral.api.paths.ROUTES`), and the
   Ollama API's reading and inference calls (not pull, delete or copy).

Refusals take the shape the path's clients read: OpenAI's under ``/v1/`` and the routed
paths, Anthropic's on ``/v1/messages*``, Ollama's ``{"error": "..."}`` under ``/api/``
(but ``/api/v1/``), corral's own elsewhere.

The guard leaves the caller's scope in ``scope["state"]`` (``openai.CALLER_SCOPE``) for
what comes after it, so nothing downstream reads keys again: ``admin`` for an admin key,
the local token or CORRAL_API_KEY, and for anyone when no key is required (a loopback
daemon without keys: whoever can reach it is its admin today); ``inference`` for an
inference key. The router lets only an admin start a stopped user instance. An admin
caller may lower its own scope to ``inference`` with ``x-corral-scope: inference`` (a
controller relaying an inference caller's request does, :mod:`corral.nodes.fleet`);
no header raises a scope.

Not ``@app.middleware("http")``: that is BaseHTTPMiddleware, which wraps every streamed
response in extra tasks and queues; the router's latency budget is a few milliseconds.
"""

from __future__ import annotations

import hmac
import json

from corral.api import errors
from corral.api.openai import CALLER_SCOPE, error_payload
from corral.api.paths import MULTIPART_PATHS, ROUTES
from corral.keys import KeyRing, write_token
from corral.net import is_loopback
from corral.nodes.fleet import SCOPE_HEADER
from corral.settings import Settings

#: Open to anyone, whatever the method.
OPEN_PATHS = ("/healthz",)
#: The web UI's static files, open to GET/HEAD so the UI can load and then ask for a key.
#: An entry ending in "/" is a prefix, except "/" itself, which is the root page only.
PUBLIC_PREFIXES = ("/", "/ui/", "/favicon.ico")
#: The OpenAI router: an ``inference`` key may call all of it (and the routed paths).
INFERENCE_PREFIX = "/v1/"
#: The Ollama API's calls an ``inference`` key may make: reading the index and inference.
#: Its pull, delete and copy change the index: admin only.
OLLAMA_INFERENCE = frozenset(
    {
        ("GET", "/api/version"),
        ("GET", "/api/tags"),
        ("POST", "/api/show"),
        ("GET", "/api/ps"),
        ("POST", "/api/chat"),
        ("POST", "/api/generate"),
        ("POST", "/api/embed"),
        ("POST", "/api/embeddings"),
    }
)
#: Every path of the Ollama API that takes a body. Ollama's own documentation calls it
#: with ``curl -d '{...}'``, which says urlencoded: there a body of any type is read as
#: JSON when no ``Origin`` came with it (a browser always sends one with a POST).
OLLAMA_BODY_PATHS = frozenset(
    {
        "/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show",
        "/api/pull", "/api/delete", "/api/copy", "/api/create", "/api/push",
    }
)  # fmt: skip
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MULTIPART = "multipart/form-data"


def _allowed_hosts(settings: Settings) -> set[str] | None:
    """Host header values naming this daemon (its port and its Ollama port); None = any
    (bound beyond loopback, key required)."""
    if not is_loopback(settings.host):
        return None
    names = {"127.0.0.1", "localhost", "[::1]", settings.host.lower()}
    ports = {settings.port, getattr(settings, "ollama_port", None)} - {None, 0}  # 0: off
    hosts = {f"{n}:{port}" for n in names for port in ports}
    return hosts | (names if 80 in ports else set())


def is_inference(method: str, path: str) -> bool:
    """Whether an ``inference`` key may call ``method path``."""
    if path.startswith(INFERENCE_PREFIX) or path in ROUTES:
        return True
    return ("GET" if method == "HEAD" else method, path) in OLLAMA_INFERENCE


def dialect_of(path: str) -> str:
    """Whose error shape a refusal on ``path`` takes: anthropic, openai, ollama or corral."""
    route = ROUTES.get(path)
    if route is not None:
        return route.dialect
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith(INFERENCE_PREFIX):
        return "openai"
    if path.startswith("/api/") and not path.startswith("/api/v1/"):
        return "ollama"
    return "corral"


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
                b"x-api-key",
                b"content-type",
                b"content-length",
                b"transfer-encoding",
                SCOPE_HEADER,
            ):
                head[name] = value.decode("latin-1")
        method = scope.get("method", "GET")  # a websocket handshake is a GET
        path = scope["path"]
        self._check_browser(method, path, head)
        secret = _bearer(head.get(b"authorization", "")) or head.get(b"x-api-key", "").strip()
        caller = self._check_key(method, path, secret)
        if caller == "admin" and head.get(SCOPE_HEADER, "").strip() == "inference":
            caller = "inference"  # a controller relaying an inference caller's request
        state = scope.get("state")
        if not isinstance(state, dict):
            state = scope["state"] = {}
        if caller is None:
            state.pop(CALLER_SCOPE, None)  # only this guard says who calls
        else:
            state[CALLER_SCOPE] = caller

    def _check_browser(self, method: str, path: str, head: dict[bytes, str]) -> None:
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
            if ctype == "application/json" or (origin is None and path in OLLAMA_BODY_PATHS):
                return
            if not (ctype == MULTIPART and path in MULTIPART_PATHS):
                raise Denied(
                    415,
                    "unsupported_media_type",
                    f"a request body must be application/json, not {ctype or 'untyped'}",
                )

    def _check_key(self, method: str, path: str, secret: str) -> str | None:
        """The caller's scope (None on a public path, where no key is checked), or Denied."""
        if is_public(method, path):
            return None
        scope = self._scope_of(secret) if secret else None
        if scope is None:
            if self.always_required or self.env_key or self.keyring().any_active():
                raise Denied(
                    401,
                    "unauthorized",
                    "missing or wrong API key (Authorization: Bearer <key>, or x-api-key)",
                )
            return "admin"  # no key required: whoever may call is the admin today
        if scope != "admin" and not is_inference(method, path):
            raise Denied(
                403,
                "forbidden",
                f"this {scope} key may only call inference endpoints "
                f"({INFERENCE_PREFIX}*, llama-server's and Ollama's)",
            )
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
    dialect = dialect_of(scope["path"])  # each client reads its own API's shape
    if dialect == "corral":
        payload = errors.error_body(denied.code, denied.message)
    elif dialect == "ollama":
        payload = {"error": denied.message}
    else:
        payload = error_payload(dialect, denied.status, denied.message)
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if denied.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": denied.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
