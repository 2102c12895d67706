"""The router's path table: every llama-server inference endpoint corral relays by ``model``.

The paths are exactly llama-server's own (``tools/server/server.cpp``, its
``ctx_http.post(...)`` lines), so a client pointed at corral instead of one llama-server
changes nothing but the host. Each :class:`Route` says what the relay needs to know:

* ``upstream``: the path the request is sent to on the instance (the same path today:
  llama-server serves every one of them; the column is here so one can be renamed).
* ``kind``: how the body names its model: ``json`` (a ``model`` member) or ``multipart``
  (a ``model`` form field, ``/v1/audio/transcriptions``); the body itself is forwarded as
  it came.
* ``dialect``: whose error shape corral's own refusals take there (``openai`` or
  ``anthropic``; the guard's 401/403 too).
* ``counted``: whether the answer reports token usage to read afterwards (token counting,
  tokenize and template endpoints do not, so their answers are not even kept).
* ``requires``: a list member checked before relaying, where llama-server would answer
  its absence with a 500 (its Anthropic conversion throws a runtime error for a missing
  ``messages``): corral says 400 in the dialect's shape instead.
* ``label``: the ``endpoint`` label of the request metrics: the path without ``/v1/`` or
  its leading ``/`` (``chat/completions``, ``infill``), so the same work under its ``/v1``
  and its bare path is one series.

Looking a path up is one dict lookup on the request's path string, as the five-path
tuple it replaces was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from corral.errors import UsageError


@dataclass(frozen=True, slots=True)
class Route:
    """What the relay needs to know about one routed path (see the module docstring)."""

    path: str
    upstream: str
    kind: str = "json"  # json | multipart
    dialect: str = "openai"  # openai | anthropic
    counted: bool = True
    label: str = ""
    requires: str | None = None


def _routes(*rows: tuple) -> dict[str, Route]:
    table = {}
    defaults = ("json", "openai", True)  # kind, dialect, counted
    for row in rows:
        path, kind, dialect, counted = row + defaults[len(row) - 1 :]
        label = path.removeprefix("/v1/").lstrip("/")
        requires = "messages" if dialect == "anthropic" else None
        table[path] = Route(path, path, kind, dialect, counted, label, requires)
    return table


#: path -> Route, for ``POST`` requests. Every path is one llama-server registers.
ROUTES: dict[str, Route] = _routes(
    ("/v1/chat/completions",),
    ("/chat/completions",),
    ("/v1/completions",),
    ("/completions",),
    ("/completion",),
    ("/v1/responses",),
    ("/responses",),
    ("/v1/chat/completions/input_tokens", "json", "openai", False),
    ("/chat/completions/input_tokens", "json", "openai", False),
    ("/v1/responses/input_tokens", "json", "openai", False),
    ("/responses/input_tokens", "json", "openai", False),
    ("/v1/messages", "json", "anthropic"),
    ("/v1/messages/count_tokens", "json", "anthropic", False),
    ("/infill",),
    ("/v1/embeddings",),
    ("/embeddings",),
    ("/embedding",),
    ("/v1/rerank",),
    ("/v1/reranking",),
    ("/rerank",),
    ("/reranking",),
    ("/tokenize", "json", "openai", False),
    ("/detokenize", "json", "openai", False),
    ("/apply-template", "json", "openai", False),
    ("/v1/audio/transcriptions", "multipart"),
    ("/audio/transcriptions", "multipart"),
)

#: Paths whose body is multipart/form-data (the guard lets that content type through there).
MULTIPART_PATHS = frozenset(p for p, r in ROUTES.items() if r.kind == "multipart")


def form_fields(body: bytes, content_type: str, wanted: tuple[str, ...]) -> dict[str, str]:
    """The ``wanted`` text fields of a multipart/form-data body (a file part is skipped
    without being copied: only each part's headers are read, and the value of a wanted
    one). UsageError when the body is not multipart or names no boundary."""
    ctype, _, params = content_type.partition(";")
    if ctype.strip().lower() != "multipart/form-data":
        raise UsageError(
            f"this endpoint takes multipart/form-data, not {ctype.strip() or 'an untyped body'}"
        )
    boundary = ""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise UsageError("multipart/form-data without a boundary")
    delim = b"--" + boundary.encode("latin-1")
    found: dict[str, str] = {}
    at = body.find(delim)
    while at >= 0:
        start = at + len(delim)
        if body[start : start + 2] == b"--":
            break  # the closing delimiter
        head_end = body.find(b"\r\n\r\n", start)
        if head_end < 0:
            break
        nxt = body.find(b"\r\n" + delim, head_end)
        name = _part_name(body[start:head_end])
        if name in wanted and nxt >= 0:
            found[name] = body[head_end + 4 : nxt].decode("utf-8", "replace")
        at = -1 if nxt < 0 else nxt + 2
    return found


def _part_name(head: bytes) -> str | None:
    """The ``name`` of a part from its headers, None for a file part or no name."""
    for line in head.decode("latin-1").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() != "content-disposition":
            continue
        name = None
        for param in value.split(";")[1:]:
            k, _, v = param.strip().partition("=")
            if k.lower() == "filename":
                return None
            if k.lower() == "name":
                name = v.strip().strip('"')
        return name
    return None


def request_fields(route: Route, body: bytes, headers) -> tuple[str | None, bool]:
    """(model or None, stream) of a request to ``route``; UsageError (400) for a body
    that is not what the endpoint takes, or a ``model`` that is not a name."""
    if route.kind == "multipart":
        ctype = next((v for k, v in headers if k == b"content-type"), b"").decode("latin-1")
        fields: dict = form_fields(body, ctype, ("model", "stream"))
        data = fields
        model: object = fields.get("model")
        stream = fields.get("stream", "").strip().lower() == "true"
    else:
        try:
            data = json.loads(body)
        except ValueError:
            raise UsageError("request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise UsageError("request body must be a JSON object")
        model = data.get("model")
        stream = data.get("stream") is True
    if model == "":
        model = None
    if model is not None and not isinstance(model, str):
        raise UsageError(
            f'"model" must be a string (a name from GET /v1/models), not {type(model).__name__}'
        )
    if route.requires is not None and not isinstance(data.get(route.requires), list):
        raise UsageError(f'"{route.requires}" is required: a list')
    return model, stream
