"""The Ollama API (``/api/chat``, ``/api/tags``...), on corral's port and on Ollama's.

Inference (``POST /api/chat``, ``/api/generate``, ``/api/embed``, ``/api/embeddings``)
is served by :class:`OllamaFront`, a plain ASGI layer in front of the ``/v1/*`` relay,
like the relay itself: the body is translated (:mod:`corral.ollama`, pure functions)
into an OpenAI request, which is handed to the relay in process through its ASGI
interface — the caller's scope state goes with it, so keys and scopes hold, and the
on-demand start, queue, heartbeats, usage counting and metrics are the router's own. The
relay's answer is translated back as it arrives: SSE chunks become NDJSON lines.

Two things are Ollama's own, done with the router's and the supervisor's public doors:
``options.num_ctx`` (the instance must run with that context: the router starts one with
``--ctx-size`` — :meth:`Router.ensure`, the on-demand start's path with its cap, budget,
eviction and de-duplication — replacing a loaded, idle router instance of the same model
that runs with another) and ``keep_alive`` (``0`` unloads the instance after the answer,
:meth:`Router.unload`; another value becomes the idle TTL of the instance serving the
request, :meth:`Supervisor.set_idle_ttl`).

The rest (``/api/version``, ``tags``, ``show``, ``ps``, ``pull``, ``delete``, ``copy``)
are FastAPI routes (:data:`router`). Every error is Ollama's ``{"error": "..."}``.

On the Ollama port (setting ``ollama_port``), ``GET /`` and ``HEAD /`` answer
``Ollama is running`` as Ollama does, for clients that probe it; on corral's own port
``/`` stays the web UI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from functools import cached_property

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from corral import gguf, models as models_lib, ollama
from corral.api.deps import Daemon
from corral.api.openai import caller_scope
from corral.errors import (
    Busy,
    Conflict,
    CorralError,
    NotFound,
    TooLarge,
    UsageError,
)
from corral.router import LIVE, Target
from corral.store import models as model_table
from corral.supervisor.states import State

log = logging.getLogger("corral.ollama")

router = APIRouter(tags=["ollama"])

#: Ollama's inference paths: (kind, OpenAI endpoint, legacy embeddings).
INFERENCE = {
    "/api/chat": "chat",
    "/api/generate": "generate",
    "/api/embed": "embed",
    "/api/embeddings": "embeddings",
}
MAX_BODY = 64 * 1024 * 1024  # the relay's own cap: images make chats large
NDJSON_HEADERS = [(b"content-type", b"application/x-ndjson")]
RUNNING = b"Ollama is running"
_MMPROJ_FLAGS = ("--mmproj", "-mm", "--mmproj-url", "-mmu")
_DROP_HEADERS = (b"content-length", b"content-type", b"transfer-encoding", b"accept-encoding")
_FOREVER = 100 * 365 * 24 * 3600.0  # "never expires", as a time Ollama clients can parse


# -- errors ------------------------------------------------------------------------------


def _error_json(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"retry-after": str(retry_after)} if retry_after else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _error_of(exc: CorralError) -> JSONResponse:
    return _error_json(exc.status, exc.message, getattr(exc, "retry_after", None))


async def _send_json(send, status: int, obj: dict, extra: list | None = None) -> None:
    body = json.dumps(obj, ensure_ascii=False).encode()
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *(extra or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send, exc: CorralError) -> None:
    extra = [(b"retry-after", str(exc.retry_after).encode())] if isinstance(exc, Busy) else None
    await _send_json(send, exc.status, {"error": exc.message}, extra)


# -- names -------------------------------------------------------------------------------


@dataclass
class _Route:
    """Where an Ollama model name leads: the name to give the relay, the live instance
    (or None), the router's target, and (:attr:`entry`) the index entry behind it (or
    None), looked up only when asked: most requests (no images, no num_ctx) never ask."""

    name: str
    rec: object | None
    target: object
    store: object = None
    remote: bool = False  # served by a linked node (corral.nodes.fleet): nothing here

    @cached_property
    def entry(self) -> model_table.ModelRecord | None:
        return _entry_for(self.store, self.rec, self.target)


def _hub_entry(d: Daemon, text: str) -> model_table.ModelRecord | None:
    """The indexed model pulled from the repo (and quant) an ``hf.co/...`` name gives."""
    found = ollama.hub_name(text)
    if found is None:
        return None
    repo, quant = found
    hits = [r for r in model_table.list_all(d.store) if (r.repo or "").lower() == repo.lower()]
    if quant:
        hits = [r for r in hits if (models_lib.quant_of(r) or "").upper() == quant]
    return hits[0] if len(hits) == 1 else None


def _entry_for(store, rec, target) -> model_table.ModelRecord | None:
    if getattr(target, "model", None):
        return model_table.find(store, target.model)
    path = getattr(rec, "model", None)
    if path is None and getattr(target, "preset", None):
        from corral.presets.saved import find

        preset = find(store, target.preset)
        path = preset.model if preset is not None else None
    if not path:
        return None
    for entry in model_table.list_all(store):
        if path in (entry.path, entry.id, entry.name):
            return entry
    return None


def resolve_route(d: Daemon, text: str, admin: bool) -> _Route:
    """The route of an Ollama model name: as typed, without ``:latest``, ``name:tag`` as
    ``name-tag``, then an ``hf.co/org/repo:QUANT`` of the index; 404 else."""
    names = ollama.name_candidates(text)
    hub = _hub_entry(d, text)
    if hub is not None:
        names.append(hub.name)
    for name in names:
        try:
            rec, target = d.router.resolve(name, admin=admin)
        except NotFound:
            continue
        return _Route(name, rec, target, d.store)
    raise NotFound(f"model '{text}' not found")


def remote_route(relay, text: str) -> _Route | None:
    """The route to a name only a linked node serves (the relay sends it there), or None."""
    state = getattr(getattr(relay, "app", None), "state", None)
    fleet = getattr(state, "fleet", None)
    if not fleet:
        return None
    for name in ollama.name_candidates(text):
        if fleet.listed(name):
            return _Route(name, None, Target(key=f"node:{name}", label=name), remote=True)
    return None


def index_entry(d: Daemon, text: str) -> model_table.ModelRecord:
    """The model of the index an Ollama name means (exactly: no prefix matching)."""
    for name in ollama.name_candidates(text):
        try:
            return models_lib.resolve(d.store, name, prefix=False)
        except NotFound:
            continue
    hub = _hub_entry(d, text)
    if hub is not None:
        return hub
    try:
        route = resolve_route(d, text, admin=True)  # a preset or an instance of a model
    except NotFound:
        route = None
    if route is not None and route.entry is not None:
        return route.entry
    raise NotFound(f"model '{text}' not found")


def _live(rec) -> bool:
    return rec is not None and rec.desired == "running" and State(rec.state) in LIVE


def _has_vision(d: Daemon, route: _Route) -> bool:
    """Whether what the route leads to reads images: its model has an mmproj in the
    index, or the instance (or preset) passes one itself."""
    if route.entry is not None and route.entry.mmproj:
        return True
    argv = list(getattr(route.rec, "argv", None) or ())
    if getattr(route.target, "preset", None):
        from corral.presets.saved import find

        preset = find(d.store, route.target.preset)
        argv += preset.flags if preset is not None else []
    return any(a.split("=", 1)[0] in _MMPROJ_FLAGS for a in argv)


# -- instances: num_ctx and keep_alive ---------------------------------------------------


def _same_target(rec, route: _Route) -> bool:
    target = route.target
    if getattr(target, "preset", None):
        return rec.preset == target.preset
    return route.entry is not None and rec.model == route.entry.path and rec.preset is None


def _launch_target(route: _Route) -> Target:
    """What the router starts for a ``num_ctx``: the route's preset or model of the index;
    for a route to an instance, that instance's model (never the instance itself)."""
    target = route.target
    if getattr(target, "preset", None) or getattr(target, "model", None):
        return target
    if route.entry is None:
        raise Conflict(
            f"instance {route.name!r} runs with its own context size; num_ctx can be "
            "chosen for a model of the index or a preset"
        )
    return Target.of_model(route.entry)


async def ensure_instance(
    d: Daemon, route: _Route, num_ctx: int | None, keep: float | None, admin: bool
) -> str:
    """The name to relay to, with the instance the request needs made so: one running
    with ``num_ctx`` as its context (the router starts it, replacing a loaded, idle
    router instance of the model that runs with another, as Ollama reloads a model; a
    user's instance is never touched: the new one runs beside it), and ``keep_alive``
    (> 0, or < 0 for never) as the idle TTL of whatever serves it."""
    if route.remote:  # a node's: its own router starts it with its own context and TTL
        return route.name
    live = route.rec if _live(route.rec) else None
    if num_ctx is None or (live is not None and ollama.ctx_of(live.flags, live.argv) == num_ctx):
        if keep is None or keep == 0:
            return live.name if live is not None else route.name
        if live is None:  # the router's on-demand start, so that the TTL can be set now
            live, _ = await d.router.instance_for(route.name, admin=admin)
        return _keep_alive(d, live, keep, admin).name
    ttl = ollama.idle_ttl_for(keep) if keep else None
    found = next(
        (
            r
            for r in d.supervisor.list()
            if _live(r) and _same_target(r, route) and ollama.ctx_of(r.flags, r.argv) == num_ctx
        ),
        None,
    )
    if found is None:
        found = await d.router.ensure(
            _launch_target(route),
            flags=("--ctx-size", str(num_ctx)),
            idle_ttl=ttl,
            replace=live.name if _replaceable(d, live) else None,
        )
    return _keep_alive(d, found, keep, admin).name if keep else found.name


def _replaceable(d: Daemon, rec) -> bool:
    """Whether ``rec`` may be stopped for a relaunch with another context: a router
    instance, loaded (not one the router is starting), with nothing in flight (the
    router checks again, under its eviction lock, before it retires it)."""
    return (
        rec is not None
        and rec.origin == "router"
        and State(rec.state) is State.READY
        and not d.router.usage()["instances"].get(rec.name, {}).get("in_flight")
    )


def _keep_alive(d: Daemon, rec, keep: float, admin: bool):
    """``keep_alive`` (not 0) as ``rec``'s idle TTL: on a router instance for anyone, on a
    user's only for an admin caller (it is theirs otherwise)."""
    ttl = ollama.idle_ttl_for(keep)
    if rec.idle_ttl == ttl or (rec.origin != "router" and not admin):
        return rec
    try:
        return d.supervisor.set_idle_ttl(rec.name, ttl)
    except NotFound:  # gone meanwhile: the relay will say so
        return rec


async def _unload(d: Daemon, name: str, admin: bool) -> None:
    """keep_alive 0: unload what serves ``name``, the router's way (a router instance is
    removed with its counters; a user's is stopped, and only for an admin caller)."""
    rec = d.supervisor.find(name)
    if rec is None:
        try:
            rec, _ = d.router.resolve(name, admin=admin)
        except CorralError:
            return
    if _live(rec) and (rec.origin == "router" or admin):
        await d.router.unload(rec.name)


# -- the relay, in process ---------------------------------------------------------------


async def _read_body(receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client left before sending its request")
        body = message.get("body", b"")
        size += len(body)
        if size > MAX_BODY:
            raise TooLarge(f"request body larger than {MAX_BODY // (1024 * 1024)} MiB")
        chunks.append(body)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _sub_scope(scope, endpoint: str, size: int) -> dict:
    """The ASGI scope of the OpenAI request made for an Ollama one: same client, same
    state (the guard's caller scope), a JSON body of ``size`` bytes."""
    sub = dict(scope)
    sub["path"] = endpoint if endpoint.startswith("/") else f"/v1/{endpoint}"
    sub["raw_path"] = sub["path"].encode()
    sub["method"] = "POST"
    sub["query_string"] = b""
    sub["headers"] = [(k, v) for k, v in scope["headers"] if k not in _DROP_HEADERS] + [
        (b"content-type", b"application/json"),
        (b"content-length", str(size).encode()),
    ]
    return sub


class _Answer:
    """The relay's answer, as it comes: a stream goes out as NDJSON line by line; anything
    else (a whole body, an error) is kept for translation at the end."""

    def __init__(self, kind: str, model: str, t0: float, stream: bool, send) -> None:
        self.translator = ollama.StreamTranslator(kind, model, t0)
        self.stream, self.client_send = stream, send
        self.status: int | None = None
        self.retry_after: list = []  # a Busy answer's Retry-After, kept for its error
        self.streaming = False
        self.finished = False  # the done line is sent
        self.body = bytearray()

    async def send(self, message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = message.get("headers") or ()
            self.retry_after = [(k, v) for k, v in headers if k == b"retry-after"]
            ctype = dict(headers).get(b"content-type", b"")
            if self.stream and self.status < 400 and b"text/event-stream" in ctype:
                self.streaming = True
                await self.client_send(
                    {"type": "http.response.start", "status": 200, "headers": NDJSON_HEADERS}
                )
            return
        data = message.get("body", b"")
        if not self.streaming:
            self.body += data
            return
        lines = self.translator.feed(data)
        more = message.get("more_body", False)
        if not more:  # the last piece: the done line goes in the same write
            lines.append(self.translator.finish())
            self.finished = True
        if lines:
            await self.client_send(
                {"type": "http.response.body", "body": b"".join(lines), "more_body": more}
            )


async def relay_call(relay, scope, receive, endpoint: str, payload: dict, answer: _Answer):
    """Hand ``payload`` to the relay as ``POST /v1/{endpoint}`` and let ``answer`` take
    what it sends. After the body, ``receive`` is the client's: a client that leaves is
    noticed by the relay, which stops the generation upstream."""
    raw = json.dumps(payload).encode()
    given = False

    async def sub_receive():
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    await relay(_sub_scope(scope, endpoint, len(raw)), sub_receive, answer.send)


# -- inference ---------------------------------------------------------------------------


@dataclass
class _Asked:
    """An inference request, read and translated."""

    kind: str
    model: str  # as the client named it (answers carry it back)
    endpoint: str
    payload: dict
    stream: bool
    keep: float | None
    empty: bool


def _translate(d: Daemon, kind: str, body: dict, route: _Route) -> _Asked:
    model = ollama.model_of(body)
    keep = ollama.keep_alive_seconds(body.get("keep_alive"))
    if kind in ("embed", "embeddings"):
        payload = ollama.embed_request(body, route.name, legacy=kind == "embeddings")
        return _Asked(kind, model, "embeddings", payload, False, keep, False)
    if kind == "chat":
        payload, images = ollama.chat_request(body, route.name)
        endpoint = "chat/completions"
    else:
        endpoint, payload, images = ollama.generate_request(body, route.name)
    if images and not route.remote and not _has_vision(d, route):  # a node says itself
        raise UsageError(f"model '{model}' has no vision projector (mmproj): it cannot read images")
    n = ollama.num_ctx_of(body)
    if n is not None:
        ctx = route.entry.metadata.get("context_length") if route.entry is not None else None
        ollama.check_num_ctx(n, ctx if isinstance(ctx, int) else None)
    stream = payload["stream"]
    return _Asked(kind, model, endpoint, payload, stream, keep, ollama.is_empty(kind, body))


async def serve_inference(d: Daemon, relay, kind: str, scope, receive, send) -> None:
    """One Ollama inference request: read, translate, relay, translate back."""
    t0 = time.perf_counter()
    admin = caller_scope(scope) == "admin"
    try:
        body = ollama.check_body(await _read_body(receive))
        try:
            route = resolve_route(d, ollama.model_of(body), admin)
        except NotFound:
            route = remote_route(relay, ollama.model_of(body))
            if route is None:
                raise
        asked = _translate(d, kind, body, route)
        num_ctx = ollama.num_ctx_of(body)
        if asked.empty:
            await _load_or_unload(d, asked, route, num_ctx, admin, send)
            return
        asked.payload["model"] = await ensure_instance(d, route, num_ctx, asked.keep, admin)
    except CorralError as exc:
        await _send_error(send, exc)
        return
    answer = _Answer("chat" if kind == "chat" else "generate", asked.model, t0, asked.stream, send)
    await relay_call(relay, scope, receive, asked.endpoint, asked.payload, answer)
    await _finish(answer, asked, t0, send)
    if asked.keep == 0:
        await _unload(d, asked.payload["model"], admin)


async def _load_or_unload(
    d: Daemon, asked: _Asked, route: _Route, num_ctx: int | None, admin: bool, send
) -> None:
    """An empty chat/generate: ``keep_alive: 0`` unloads the model now, else it is loaded
    (with ``num_ctx`` if asked)."""
    if asked.keep == 0:
        await _unload(d, route.name, admin)
        reason = "unload"
    else:
        name = await ensure_instance(d, route, num_ctx, asked.keep, admin)
        if not route.remote:  # a node's model loads there on its first request
            await d.router.instance_for(name, admin=admin)
        reason = "load"
    await _send_json(send, 200, ollama.empty_answer(asked.kind, asked.model, reason))


async def _finish(answer: _Answer, asked: _Asked, t0: float, send) -> None:
    """Send what is left: the stream's last line, or the whole answer translated."""
    if answer.streaming:
        if not answer.finished:  # the relay stopped without a last piece (client gone)
            await send({"type": "http.response.body", "body": answer.translator.finish()})
        return
    if answer.status is None:
        return  # the client left before anything was answered
    if answer.status >= 400:
        message = ollama.error_message(answer.status, bytes(answer.body))
        await _send_json(send, answer.status, {"error": message}, answer.retry_after)
        return
    try:
        data = json.loads(answer.body)
    except (ValueError, UnicodeDecodeError):
        await _send_json(send, 502, {"error": "the instance answered something not JSON"})
        return
    total = time.perf_counter() - t0
    if asked.kind in ("embed", "embeddings"):
        out = ollama.embed_answer(data, asked.model, total, legacy=asked.kind == "embeddings")
    else:
        out = ollama.chat_answer(data, asked.model, total, asked.kind)
    await _send_json(send, 200, out)


class OllamaFront:
    """ASGI layer: Ollama's inference paths, and ``/`` on the Ollama port; the rest to
    ``app`` (the relay, then FastAPI)."""

    def __init__(self, app, fastapi_app, settings) -> None:
        self.app = app
        self.fastapi_app = fastapi_app  # its state holds the daemon
        self.ollama_port = int(getattr(settings, "ollama_port", 0) or 0)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == "/" and method in ("GET", "HEAD") and self._on_ollama_port(scope):
            await _running(send, method)
            return
        kind = INFERENCE.get(path)
        if kind is None or method != "POST":
            await self.app(scope, receive, send)
            return
        d: Daemon = self.fastapi_app.state.daemon
        started = False

        async def tracked(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await serve_inference(d, self.app, kind, scope, receive, tracked)
        except ConnectionResetError:
            pass  # the client left
        except Exception:  # a bug: said in Ollama's shape, never a bare 500 page
            log.exception("%s %s", method, path)
            if not started:
                await _send_json(send, 500, {"error": "internal error (see the daemon log)"})

    def _on_ollama_port(self, scope) -> bool:
        server = scope.get("server")
        return bool(self.ollama_port) and bool(server) and server[1] == self.ollama_port


async def _running(send, method: str) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(RUNNING)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else RUNNING})


# -- the other routes ------------------------------------------------------------------


async def _run(request: Request, handler, with_body: bool = True):
    """Run ``handler(daemon, body)``; a CorralError becomes Ollama's ``{"error"}``."""
    d: Daemon = request.app.state.daemon
    try:
        body = ollama.check_body(await request.body()) if with_body else {}
        return await handler(d, body)
    except CorralError as exc:
        return _error_of(exc)


@router.get("/api/version")
async def version() -> dict:
    """The Ollama version corral answers as (Ollama clients check it)."""
    return {"version": ollama.VERSION}


def _listed(rec: model_table.ModelRecord) -> dict:
    name = ollama.listed_name(rec.name)
    return {
        "name": name,
        "model": name,
        "modified_at": ollama.rfc3339(rec.added_at),
        "size": rec.size,
        "digest": ollama.digest(rec.files, rec.id),
        "details": ollama.details(rec.metadata, models_lib.quant_of(rec)),
    }


def _listed_presets(d: Daemon, entries: list[model_table.ModelRecord]) -> list[dict]:
    """Presets with a model of the index, listed under their own names (with that
    model's details): a preset is a name requests may use, like a model."""
    from corral.presets.model import DEFAULTS
    from corral.presets.saved import list_all

    out = []
    taken = {e.name for e in entries}
    for preset in list_all(d.store):
        if preset.name == DEFAULTS or not preset.model or preset.name in taken:
            continue
        entry = next((e for e in entries if preset.model in (e.id, e.name, e.path)), None)
        if entry is not None:
            out.append({**_listed(entry), "name": ollama.listed_name(preset.name)})
            out[-1]["model"] = out[-1]["name"]
    return out


@router.get("/api/tags")
async def tags(request: Request):
    """The models of the index and the presets of those models, as Ollama lists its
    models."""

    async def handler(d: Daemon, _body: dict) -> dict:
        entries = model_table.list_all(d.store)
        return {"models": [_listed(r) for r in entries] + _listed_presets(d, entries)}

    return await _run(request, handler, with_body=False)


async def _show(d: Daemon, body: dict) -> dict:
    entry = index_entry(d, ollama.model_of(body))
    verbose = body.get("verbose") is True
    try:
        kv = (await asyncio.to_thread(gguf.read_metadata, entry.path)).kv
    except CorralError:
        kv = {}
    running = [r for r in d.supervisor.list() if _live(r) and r.model == entry.path]
    template = kv.get("tokenizer.chat_template")
    return {
        "license": kv.get("general.license") or "",
        "modelfile": f"# corral model {entry.name}\nFROM {entry.path}\n",
        "parameters": ollama.parameters_text(running[0].flags) if running else "",
        "template": template if isinstance(template, str) else "",
        "details": ollama.details(entry.metadata, models_lib.quant_of(entry)),
        "model_info": ollama.model_info(kv, verbose),
        "capabilities": ollama.capabilities(kv, bool(entry.mmproj)),
        "modified_at": ollama.rfc3339(entry.added_at),
    }


@router.post("/api/show")
async def show(request: Request):
    """A model's details, GGUF metadata, chat template and capabilities."""
    return await _run(request, _show)


def _ps_row(d: Daemon, rec, entries: list[model_table.ModelRecord], usage: dict) -> dict:
    entry = next((e for e in entries if e.path == rec.model), None)
    name = ollama.listed_name(rec.preset or (entry.name if entry else rec.name))
    devices = (rec.placement or {}).get("devices") or ()
    planned = sum(int(x.get("used_bytes") or 0) for x in devices)
    vram = sum(int(x.get("used_bytes") or 0) for x in devices if x.get("kind") == "gpu")
    ttl = d.router.idle_ttl_of(rec)
    last = usage.get(rec.name, {}).get("last_used_at") or rec.ready_at or time.time()
    return {
        "name": name,
        "model": name,
        "size": planned or (entry.size if entry else 0),
        "digest": ollama.digest(entry.files if entry else [], rec.model),
        "details": ollama.details(entry.metadata if entry else {}, None),
        "expires_at": ollama.rfc3339(time.time() + _FOREVER if ttl <= 0 else last + ttl),
        "size_vram": vram,
        "context_length": ollama.ctx_of(rec.flags, rec.argv) or 0,
    }


@router.get("/api/ps")
async def ps(request: Request):
    """The running instances, as Ollama lists its loaded models."""

    async def handler(d: Daemon, _body: dict) -> dict:
        entries = model_table.list_all(d.store)
        usage = d.router.usage()["instances"]
        live = [r for r in d.supervisor.list() if _live(r)]
        return {"models": [_ps_row(d, r, entries, usage) for r in live]}

    return await _run(request, handler, with_body=False)


async def _pull_lines(d: Daemon, job_id: str):
    """Ollama's pull progress for one corral pull job, until it ends."""
    from corral.pulls import ACTIVE

    yield ollama.ndjson({"status": "pulling manifest"})
    sent: dict = {}
    while True:
        job = d.pulls.get(job_id)
        for line in ollama.pull_lines(job.view(), sent):
            yield ollama.ndjson(line)
        if job.state not in ACTIVE:
            break
        await asyncio.sleep(0.2)
    if job.state == "done":
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            yield ollama.ndjson({"status": status})
    else:
        yield ollama.ndjson({"error": job.error or f"pull {job.state}"})


async def _pull(d: Daemon, body: dict):
    ref = ollama.pull_ref(ollama.model_of(body))
    job = await d.pulls.start(ref)
    if ollama.wants_stream(body):
        return StreamingResponse(_pull_lines(d, job.id), media_type="application/x-ndjson")
    job = await d.pulls.wait(job.id)
    if job.state == "done":
        return {"status": "success"}
    from corral.errors import by_code

    status = by_code().get(job.error_code or "", CorralError).status
    return _error_json(status, job.error or f"pull {job.state}")


@router.post("/api/pull")
async def pull(request: Request):
    """Pull ``hf.co/org/repo:QUANT`` (or ``org/repo:QUANT``) with Ollama's progress lines."""
    return await _run(request, _pull)


async def _delete(d: Daemon, body: dict):
    entry = index_entry(d, ollama.model_of(body))
    await asyncio.to_thread(
        models_lib.remove,
        d.store,
        entry.id,
        delete_files=True,
        models_dir=d.settings.models_dir,
        force=False,
    )
    return Response(status_code=200)


@router.delete("/api/delete")
async def delete(request: Request):
    """Remove a model and the files corral downloaded (409 while an instance uses them)."""
    return await _run(request, _delete)


async def _copy(d: Daemon, body: dict):
    from corral.presets.model import clean_aliases

    source, dest = body.get("source"), body.get("destination")
    if not isinstance(source, str) or not isinstance(dest, str) or not source or not dest:
        raise UsageError("source and destination are required")
    entry = index_entry(d, source)
    alias = ollama.name_candidates(dest)[-1] if dest.lower().endswith(":latest") else dest
    alias = clean_aliases([alias])[0]
    try:
        other = models_lib.resolve(d.store, alias, prefix=False)
    except NotFound:
        other = None
    if other is not None and other.id != entry.id:
        raise Conflict(f"{alias!r} already names model {other.name!r}")
    if other is None:
        model_table.update(d.store, entry.id, aliases=[*entry.aliases, alias])
        d.router.forget_routes()
    return Response(status_code=200)


@router.post("/api/copy")
async def copy(request: Request):
    """Give a model another name (an alias in the index), as ``ollama cp`` does."""
    return await _run(request, _copy)


@router.post("/api/create")
@router.post("/api/push")
async def not_supported() -> JSONResponse:
    """Ollama's model building and pushing: not corral's; a clear 400 in Ollama's shape
    (not 501: no 5xx for what a client asked wrongly)."""
    return _error_json(
        400,
        "corral does not build or push Ollama models: pull GGUF models from Hugging Face "
        "(ollama pull hf.co/ORG/REPO:QUANT), or import GGUF files (corral import PATH)",
    )
