"""Request body caps, as one pure-ASGI wrapper around the FastAPI app.

Starlette reads a whole body into memory before a route sees it, so without a cap one
300 MB POST costs the daemon 300 MB and more (it was measured growing from 71 to 686 MB).
:class:`BodyLimit` refuses without buffering:

* a ``Content-Length`` over the cap is answered 413 at once, the body never read;
* a chunked (or lying) body is counted as it arrives; at the first byte over the cap
  the app's read fails, whatever the app answers is dropped and 413 goes out instead.

Either way at most ``cap`` bytes plus one chunk are held. The answer is
:class:`~corral.errors.TooLarge` in the API's error shape. The cap is
:data:`MANAGEMENT_MAX_BODY` (1 MiB) for everything the FastAPI app serves, except what
:data:`CAPS` lists: no endpoint takes a multipart upload (models are pulled or imported
by path, never posted), but two take documents that may be larger — a preset file
(``/api/v1/presets/import``, up to 1,000,000 characters, which JSON-escaped can reach
~6 MB: 8 MiB) and a saved chat (``/api/v1/conversations``, up to 500 messages of 100,000
characters: 64 MiB, the relay's own cap, since a chat larger than that could not be sent
to a model anyway). The routed ``POST /v1/*`` never reaches this wrapper:
the relay in front of the app (``api/openai.py``) reads those bodies with its own cap.
"""

from __future__ import annotations

import json

from corral.errors import TooLarge

MANAGEMENT_MAX_BODY = 1024 * 1024
#: Path prefix -> cap in bytes, for endpoints that legitimately take more (see above).
CAPS: dict[str, int] = {
    "/api/v1/presets/import": 8 * 1024 * 1024,
    "/api/v1/conversations": 64 * 1024 * 1024,
}


class _Overflow(Exception):
    """Raised into the app by ``receive`` at the first byte over the cap."""


def cap_for(path: str) -> int:
    """The body cap of a path: the longest matching prefix in CAPS, else the default."""
    best = ""
    for prefix in CAPS:
        if path.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return CAPS[best] if best else MANAGEMENT_MAX_BODY


def _declared_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def send_too_large(send, cap: int) -> None:
    exc = TooLarge(f"request body larger than {_size(cap)} (the cap of this endpoint)")
    body = json.dumps(exc.to_dict()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n} bytes"


class BodyLimit:
    """ASGI middleware: HTTP request bodies over :func:`cap_for` of their path get 413
    (installed with ``app.add_middleware(BodyLimit)``)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = cap_for(scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > cap:
            await send_too_large(send, cap)
            return
        seen = 0
        over = False
        started = False

        async def counted_receive():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    over = True
                    raise _Overflow()
            return message

        async def guarded_send(message) -> None:
            nonlocal started
            if over and not started:  # the app's answer to the failed read: the 413 replaces it
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await send_too_large(send, cap)
