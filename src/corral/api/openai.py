"""/v1/*: the OpenAI-compatible endpoints, proxied to llama-server instances.

Every inference path of llama-server (the table in :mod:`corral.api.paths`: the OpenAI
ones, Anthropic's ``/v1/messages``, ``/infill``, ``/tokenize`` ...) is served by
:class:`Relay`, a plain ASGI middleware in front of FastAPI: the relay is the hot path of
every token a user sees, and routing, dependency injection and a response class per
request would cost more than the whole relay. It reads the body, finds (or starts) the
instance the body's ``model`` names (without one: the only running instance), sends the
request over a kept-alive connection (:mod:`corral.upstream`) and passes each socket
read on as one message. Corral's own errors take the path's dialect (OpenAI's shape, or
Anthropic's on ``/v1/messages*``, :mod:`corral.api.anthropic`).

Only when the model must be loaded first does a streaming request get an early
``200 text/event-stream`` with SSE comments every ``router_heartbeat`` seconds, so
clients with read timeouts keep waiting; errors that happen before the first heartbeat
keep their own status. After the status line is sent, an error is an OpenAI-shaped
``data: {"error": ...}`` event (Anthropic's ``event: error`` on ``/v1/messages``).

The caller's scope comes from the guard through the ASGI scope (never from re-reading
keys here): only an ``admin`` caller may have a stopped user instance started (403
otherwise, see :mod:`corral.router`). The client's ``Authorization`` (or ``x-api-key``)
is never forwarded; an instance launched with an API key gets its own
(``Router.upstream_key``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi import APIRouter, Depends, Request

from corral.api import anthropic
from corral.api.deps import Daemon, get_daemon
from corral.api.paths import ROUTES, Route, request_fields
from corral.errors import Busy, CorralError, NotFound, TooLarge, UpstreamError
from corral.nodes.fleet import HOP_HEADER, SCOPE_HEADER, SERVING, Candidate, Fleet, Hop
from corral.router import (
    CLIENT_GONE,
    HOP_HEADERS,
    LIVE,
    USAGE_BODY_MAX,
    USAGE_TAIL,
    Router,
    pull_error,
)
from corral.supervisor.states import State
from corral.upstream import request_head

router = APIRouter(tags=["openai"])
log = logging.getLogger("corral.relay")

MAX_BODY = 64 * 1024 * 1024
KEEP_HEADERS = (b"content-type", b"cache-control", b"x-accel-buffering", b"content-length")
_HOP = {h.encode() for h in HOP_HEADERS}
_FLEET = (HOP_HEADER, SCOPE_HEADER)  # set by this daemon only, never passed on as sent
SSE_START_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
#: The key under ``scope["state"]`` where the guard (:mod:`corral.api.security`) leaves
#: the caller's scope.
CALLER_SCOPE = "corral_caller_scope"


def openai_error(status: int, message: str, typ: str = "invalid_request_error") -> dict:
    """OpenAI's error body: what OpenAI clients read on ``/v1/*`` (the guard's refusals too)."""
    return {"error": {"message": message, "type": typ, "code": status}}


def _openai_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return {401: "authentication_error", 403: "permission_error"}.get(
        status, "invalid_request_error"
    )


def error_payload(dialect: str, status: int, message: str) -> dict:
    """The error body a client of ``dialect`` (``openai``, ``anthropic``) reads."""
    if dialect == "anthropic":
        return anthropic.error_body(status, message)
    return openai_error(status, message, _openai_type(status))


def caller_scope(scope) -> str | None:
    """The caller's scope (``admin``, ``inference``) the guard found for an ASGI request."""
    state = scope.get("state")
    return state.get(CALLER_SCOPE) if isinstance(state, dict) else None


@router.get("/v1/models")
async def list_models(request: Request, d: Daemon = Depends(get_daemon)) -> dict:
    """Every name a request may use, once each: running instances, presets, indexed
    models (file paths only for an admin caller)."""
    admin = caller_scope(request.scope) == "admin"
    data = d.router.models(admin=admin)
    fleet = getattr(request.app.state, "fleet", None)
    if fleet and not _hopped(request.scope):
        data = union(data, fleet.entries())
    return {"object": "list", "data": data}


def union(here: list[dict], there: list[tuple[str, dict]]) -> list[dict]:
    """This daemon's names and the linked nodes' (``(node, entry)`` pairs), each once:
    ``local`` says whether this daemon serves it, ``nodes`` which up nodes do; a name's
    state is ``running`` when it runs anywhere."""
    out: dict[str, dict] = {}
    for entry in here:
        out[entry["id"]] = {**entry, "local": True, "nodes": []}
    for node, entry in there:
        mine = out.get(entry["id"])
        if mine is None:
            mine = out[entry["id"]] = {
                "id": entry["id"],
                "object": "model",
                "owned_by": "corral",
                "kind": entry.get("kind"),
                "state": entry.get("state"),
                "aliases": entry.get("aliases") or [],
                "local": False,
                "nodes": [],
            }
        elif entry.get("state") in SERVING and mine.get("state") not in SERVING:
            mine["state"] = entry["state"]
        mine["nodes"].append(node)
    return list(out.values())


def _sse_error(exc_or_message, status: int = 502, dialect: str = "openai") -> bytes:
    if isinstance(exc_or_message, CorralError):
        status, message = exc_or_message.status, exc_or_message.message
    else:
        message = str(exc_or_message)
    if dialect == "anthropic":
        return anthropic.sse_error(status, message)
    return b"data: " + json.dumps(openai_error(status, message, "server_error")).encode() + b"\n\n"


async def _send_error(send, exc: CorralError, dialect: str = "openai") -> None:
    body = json.dumps(error_payload(dialect, exc.status, exc.message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if isinstance(exc, Busy):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client left before sending its request")
        body = message.get("body", b"")
        if body:
            size += len(body)
            if size > MAX_BODY:
                raise TooLarge(f"request body larger than {MAX_BODY // (1024 * 1024)} MiB")
            chunks.append(body)
        if not message.get("more_body", False):
            return b"".join(chunks)


class Relay:
    """ASGI wrapper of the FastAPI app: the routed ``POST`` paths (:data:`ROUTES`) here,
    the rest to it. With linked nodes (``app.state.fleet``), a model may be served by a
    node (:func:`_across`)."""

    def __init__(self, app) -> None:
        self.app = app  # the FastAPI app: its state holds the daemon

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        route = ROUTES.get(path) if path else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state = self.app.state
        rt: Router = state.daemon.router
        try:
            await _serve(rt, route, scope, receive, send, getattr(state, "fleet", None))
        except ConnectionResetError:
            pass  # the client left; nothing to answer


async def _serve(rt: Router, route: Route, scope, receive, send, fleet=None) -> None:
    t0 = time.perf_counter()
    try:
        body = await _read_body(receive)
        model, stream = request_fields(route, body, scope["headers"])
        if model is None:
            model = rt.sole_instance()
        admin = caller_scope(scope) == "admin"
        if fleet and not _hopped(scope):  # linked nodes, and not a node's own request
            request = (route, scope, receive, send, body, model, admin, stream, t0)
            if await _across(rt, fleet, *request):
                return  # a node served it
        try:
            rec, target = rt.resolve(model, admin=admin)
        except NotFound:  # nothing here has it: a Hub reference may be pulled first
            if not await rt.pull_missing(model, admin=admin):
                raise
            rec, target = rt.resolve(model, admin=admin)
    except CorralError as exc:  # clients expect their dialect's error shape
        rt.metrics.rejected.labels(exc.code).inc()
        await _send_error(send, exc, route.dialect)
        return
    gone = _Gone(receive)
    try:
        label = target.label
        started = False
        if rec is None or rec.state != State.READY:
            waiting = asyncio.ensure_future(rt.instance_for(model, admin=admin))
            waiting.add_done_callback(_retrieve)  # a client may leave before the load ends
            if stream:
                started = await _heartbeats(rt, waiting, model, gone, send)
            if not waiting.done():
                await asyncio.wait({waiting, gone.watch()}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                waiting.cancel()  # free its place in the queue; the load itself goes on
                return
            try:
                rec, label = waiting.result()
            except CorralError as exc:
                await _reject(rt, exc, started, send, route.dialect)
                return
        await _relay(rt, rec, label, route, scope, body, t0, gone, send, started, stream)
    finally:
        gone.cancel()


# -- across nodes (corral.nodes.fleet) ----------------------------------------------------


def _hopped(scope) -> bool:
    """Whether a controller relayed this request here (served here, never sent on)."""
    for name, _ in scope["headers"]:
        if name == HOP_HEADER:
            return True
    return False


async def _across(
    rt: Router, fleet: Fleet, route, scope, receive, send, body, model, admin, stream, t0
) -> bool:
    """Serve ``model`` from a linked node when one is the better place (see
    :mod:`corral.nodes.fleet`): True when a node answered; False when this daemon serves
    it itself. A node that cannot be reached is skipped for the next best (before any
    byte went to the client); Busy (503) when every place that has the model failed.

    The hot path of a model placed on a node costs two dict lookups here (no SQLite):
    this daemon's route cache (a ready instance here wins), then the placement."""
    if rt.ready_route(model) is not None:
        return False
    tried: dict[str, str] = {}  # node -> why it could not serve
    gone = _Gone(receive)
    try:
        while True:
            node = fleet.placed(model)
            if node is None or node in tried:
                node = await _best_place(rt, fleet, model, admin, tried)
            if node is None:
                return False  # this daemon: it serves the model, or says why not
            try:
                hop = fleet.hop(node, model)
            except LookupError:  # removed (corral nodes rm) meanwhile
                why = "no longer linked"
            else:
                why = await _relay_hop(rt, hop, route, scope, body, t0, gone, send, stream, admin)
            if why is None:
                fleet.place(model, node)
                return True
            fleet.failed(model, node)
            tried[node] = why
            log.warning("node %s could not serve %s: %s", node, model, why)
            if gone.done():
                return True  # the client left meanwhile: nothing to answer
    finally:
        gone.cancel()


async def _best_place(rt: Router, fleet: Fleet, model: str, admin: bool, tried: dict) -> str | None:
    """The best node for ``model`` not in ``tried`` (None: this daemon). Busy when the
    model is only on nodes that are down or were tried."""
    if not fleet.listed(model):  # no up node has it: the cheap, common answer
        down = fleet.down_having(model)
        if not down and not tried:
            if rt.pullable(model) and not _servable_here(rt, model, admin):
                return await _pull_place(rt, fleet, model, admin)
            return None
        if _servable_here(rt, model, admin):
            return None
        raise _none_left(model, down, tried)
    local = await _local_candidate(rt, model, admin)
    ranked = [c for c in await fleet.candidates(model, local) if c.node not in tried]
    if not ranked:
        raise _none_left(model, fleet.down_having(model), tried)
    return ranked[0].node


async def _pull_place(rt: Router, fleet: Fleet, model: str, admin: bool) -> str | None:
    """Pull ``model``, which nobody has, where there is the most free memory: None when
    that is this daemon (its own path pulls it, :meth:`Router.pull_missing`), else the
    node, once its pull is done."""
    if not admin:
        return None  # this daemon's path says why not (Forbidden)
    from corral import gpu

    host = await asyncio.to_thread(gpu.detect)
    best = fleet.pull_targets((sum(g.vram_free or 0 for g in host.gpus), host.ram_free))[0]
    if best.node is None:
        return None
    log.info("pulling %s on node %s for a request (router_pull_missing)", model, best.node)
    job = await fleet.pull(best.node, model, rt.settings.router_queue_timeout)
    state = job.get("state")
    if state in ("queued", "running"):
        raise Busy(f"{model!r} is still being pulled on node {best.node}; try again later", 30)
    if state != "done":
        message = job.get("error") or job.get("message")
        raise pull_error(
            model, f"node {best.node}: {message}", job.get("error_code") or job.get("code")
        )
    return best.node


def _none_left(model: str, down: list[str], tried: dict[str, str]) -> Busy:
    parts = [f"{n}: {why}" for n, why in sorted(tried.items())]
    parts += [f"{n}: down" for n in down if n not in tried]
    return Busy(f"no node can serve {model!r} now ({'; '.join(parts)})", retry_after=30)


def _servable_here(rt: Router, model: str, admin: bool) -> bool:
    try:
        rt.resolve(model, admin=admin)
    except CorralError:
        return False
    return True


async def _local_candidate(rt: Router, model: str, admin: bool) -> Candidate | None:
    """This daemon as a place for ``model``: None when it cannot serve it."""
    try:
        rec, target = rt.resolve(model, admin=admin)
    except CorralError:
        return None
    live = sum(1 for r in rt.supervisor.list() if r.desired == "running" and State(r.state) in LIVE)
    if rec is not None:
        return Candidate(None, True, True, live)
    return Candidate(None, False, await rt.fits_here(target), live)


async def _relay_hop(
    rt: Router, hop: Hop, route, scope, body, t0, gone: _Gone, send, stream, admin
) -> str | None:
    """Send the request to a node's own ``route`` path with the node's key and stream
    its answer back: None when the node answered, else why it could not (nothing was
    sent to the client then, so another node may be tried)."""
    headers = [(k, v) for k, v in scope["headers"] if k not in _HOP and k not in _FLEET]
    headers += [(b"authorization", hop.authorization), (HOP_HEADER, b"1")]
    if not admin:  # the node holds the controller as admin: say the caller is not
        headers.append((SCOPE_HEADER, b"inference"))
    host = f"[{hop.host}]" if ":" in hop.host else hop.host
    head = request_head(route.upstream, host, hop.port, headers, len(body))
    usage = rt.begin(hop, hop.label)
    seen = _Seen(route.counted)
    resp = None
    on_gone = None
    try:
        call = rt.upstream.request(hop.host, hop.port, head, body, hop.tls)
        try:
            resp = await (call if stream else _unless_gone(call, gone.watch()))
        except UpstreamError as exc:
            return exc.message
        if resp is None:
            seen.status = CLIENT_GONE
            return None
        seen.status = resp.status
        if resp.status == 401:  # the node no longer takes the controller's key
            seen.status = 502
            resp.abort()
            return "it refused the controller's key (corral nodes rm and add it again)"
        on_gone = _aborter(resp)
        if gone.future is not None:
            gone.future.add_done_callback(on_gone)
        await _send_head(resp, hop, False, send, route.dialect)
        streamed = b"text/event-stream" in (resp.header(b"content-type") or b"")
        if not await _pump(resp, seen, t0, gone, on_gone, streamed, send):
            await _end_unfinished(resp, hop, seen, gone, streamed, send, route.dialect)
        return None
    finally:
        _settle(rt, hop, hop.label, usage, seen, resp, gone, on_gone, t0, route.label)


async def _heartbeats(rt: Router, waiting: asyncio.Future, model: str, gone: _Gone, send) -> bool:
    """Wait one heartbeat for the load; then send 200 and a comment per heartbeat."""
    beat = rt.settings.router_heartbeat
    done, _ = await asyncio.wait({waiting}, timeout=beat)
    if done:
        return False
    await send({"type": "http.response.start", "status": 200, "headers": SSE_START_HEADERS})
    comment = {
        "type": "http.response.body",
        "body": f": loading {model}\n\n".encode(),
        "more_body": True,
    }
    while True:
        await send(comment)
        left = gone.watch()
        done, _ = await asyncio.wait(
            {waiting, left}, timeout=beat, return_when=asyncio.FIRST_COMPLETED
        )
        if waiting in done or left in done:
            return True


async def _unless_gone(coro, gone: asyncio.Future):
    """``coro``'s result, or None (with ``coro`` cancelled) if the client leaves first."""
    task = asyncio.ensure_future(coro)
    await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()  # closes the upstream connection: llama-server stops generating
    await asyncio.gather(task, return_exceptions=True)
    return None


class _Gone:
    """Tells when the client disconnects. ASGI says so through ``receive()``; the task
    that waits on it is only made when something needs to watch."""

    __slots__ = ("_receive", "future")

    def __init__(self, receive) -> None:
        self._receive = receive
        self.future: asyncio.Future | None = None

    def watch(self) -> asyncio.Future:
        if self.future is None:
            self.future = asyncio.ensure_future(self._receive())
        return self.future

    def done(self) -> bool:
        return self.future is not None and self.future.done()

    def cancel(self) -> None:
        if self.future is not None:
            self.future.cancel()


def _aborter(resp):
    def abort(_fut) -> None:
        resp.abort()

    return abort


def _retrieve(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()


async def _reject(rt: Router, exc: CorralError, started: bool, send, dialect: str) -> None:
    """Count a refused request and answer it: an SSE error event once heartbeats have
    started the stream, else an error response."""
    rt.metrics.rejected.labels(exc.code).inc()
    await _answer_error(exc, started, send, dialect)


class _Seen:
    """What the relay saw of one answer, for :meth:`Router.end`. Kept current while the
    answer streams, so an answer cut short is still counted with what had arrived."""

    __slots__ = ("status", "ttft", "tail", "keep", "head")

    def __init__(self, counted: bool) -> None:
        self.status = 502  # until the instance answers
        self.ttft: float | None = None
        self.tail = bytearray()  # the end of the answer, where usage is reported
        self.keep = counted  # False once a plain body outgrew USAGE_BODY_MAX
        self.head: bytes | None = None  # the first read (Anthropic's input tokens are there)


async def _relay(
    rt: Router,
    rec,
    label: str,
    route: Route,
    scope,
    body: bytes,
    t0: float,
    gone: _Gone,
    send,
    started: bool,
    stream: bool,
) -> None:
    """Forward to the instance and stream its answer back, counting it afterwards.

    The steps: the request head (with the instance's own key), the upstream request, the
    response head, the body's chunks, and what to say when the body was cut short."""
    host = "127.0.0.1" if rec.host in ("0.0.0.0", "::") else rec.host
    dialect = route.dialect
    try:
        head = _upstream_head(rt, rec, host, route.upstream, scope, len(body))
    except UpstreamError as exc:
        await _reject(rt, exc, started, send, dialect)
        return
    usage = rt.begin(rec, label)
    seen = _Seen(route.counted)
    resp = None
    on_gone = None
    try:
        try:
            resp = await _request(rt, rec, host, head, body, stream, gone)
        except UpstreamError as exc:
            await _answer_error(exc, started, send, dialect)
            return
        if resp is None:
            seen.status = CLIENT_GONE
            return
        seen.status = resp.status
        streamed = b"text/event-stream" in (resp.header(b"content-type") or b"")
        on_gone = _aborter(resp)  # a client that leaves stops generation upstream
        if gone.future is not None:
            gone.future.add_done_callback(on_gone)
        if not await _send_head(resp, rec, started, send, dialect):
            return
        if not await _pump(resp, seen, t0, gone, on_gone, streamed, send):
            await _end_unfinished(resp, rec, seen, gone, streamed, send, dialect)
    finally:
        _settle(rt, rec, label, usage, seen, resp, gone, on_gone, t0, route.label)


def _settle(rt: Router, rec, label, usage, seen: _Seen, resp, gone, on_gone, t0, endpoint):
    """After an answer (whole, cut short or failed): stop watching the client for it,
    give the connection back, and count the request (:meth:`Router.end`)."""
    if on_gone is not None and gone.future is not None:
        gone.future.remove_done_callback(on_gone)
    if resp is not None:
        resp.release()
    rt.end(
        rec,
        label,
        usage,
        status=seen.status,
        ttft=seen.ttft,
        elapsed=time.perf_counter() - t0,
        tail=bytes(seen.tail) if seen.keep else None,
        endpoint=endpoint,
        head=seen.head if seen.keep else None,
    )


def _upstream_head(rt: Router, rec, host: str, path: str, scope, size: int) -> bytes:
    """The request head for the instance: the client's headers without the hop-by-hop
    ones (and without its ``Authorization`` or ``x-api-key``), plus the instance's own
    key if it has one (UpstreamKeyError when that key cannot be read)."""
    headers = [(k, v) for k, v in scope["headers"] if k not in _HOP]
    key = rt.upstream_key(rec)
    if key is not None:
        headers.append((b"authorization", b"Bearer " + key.encode()))
    return request_head(path, host, rec.port, headers, size)


async def _request(rt: Router, rec, host: str, head: bytes, body: bytes, stream: bool, gone):
    """The instance's response (its head read), or None when the client left first; an
    UpstreamError naming the instance when it cannot be reached."""
    try:
        if stream:  # llama-server answers a stream's head at once
            return await rt.upstream.request(host, rec.port, head, body)
        # The head comes after the whole generation: watch for the client leaving.
        return await _unless_gone(rt.upstream.request(host, rec.port, head, body), gone.watch())
    except UpstreamError as exc:
        raise UpstreamError(f"instance {rec.name!r}: {exc.message}") from None


async def _answer_error(exc: CorralError, started: bool, send, dialect: str) -> None:
    """An SSE error event once heartbeats have started the stream, else an error response."""
    if started:
        await send({"type": "http.response.body", "body": _sse_error(exc, dialect=dialect)})
    else:
        await _send_error(send, exc, dialect)


async def _send_head(resp, rec, started: bool, send, dialect: str) -> bool:
    """Send the response's status and headers; False when the answer ends here (an error
    status after heartbeats sent 200: said as an SSE error event instead)."""
    if not started:
        await send(
            {
                "type": "http.response.start",
                "status": resp.status,
                "headers": [(k, v) for k, v in resp.headers if k in KEEP_HEADERS],
            }
        )
        return True
    if resp.status < 400:
        return True
    detail = (await resp.read(4096)).decode("utf-8", "replace")
    message = f"instance {rec.name!r} answered {resp.status}: {detail}"
    body = _sse_error(message, resp.status, dialect)
    await send({"type": "http.response.body", "body": body})
    return False


async def _pump(resp, seen: _Seen, t0: float, gone: _Gone, on_gone, streamed: bool, send) -> bool:
    """Pass each socket read on as one ASGI message, keeping the tail for usage; True when
    the last message ended the response. The per-chunk loop of every token: locals only,
    nothing allocated or awaited beyond the read and the send."""
    ttft = seen.ttft
    tail = seen.tail
    keep = seen.keep
    ended = False
    try:
        async for data in resp.chunks():
            if ttft is None:
                ttft = time.perf_counter() - t0
                seen.head = data  # once per answer: where a stream states its input tokens
            if keep:
                tail += data
                if streamed:
                    if len(tail) > 2 * USAGE_TAIL:
                        del tail[:-USAGE_TAIL]
                elif len(tail) > USAGE_BODY_MAX:
                    keep, tail = False, bytearray()
            # The last piece ends the response in the same write (one syscall less).
            ended = resp.complete
            await send({"type": "http.response.body", "body": data, "more_body": not ended})
            if not ended and gone.future is None:
                # More is to come: from now on notice the client leaving. (An answer that
                # arrives whole never needs the watcher, which is a task per request.)
                gone.watch().add_done_callback(on_gone)
    finally:
        seen.ttft, seen.tail, seen.keep = ttft, tail, keep
    return ended


async def _end_unfinished(
    resp, rec, seen: _Seen, gone: _Gone, streamed: bool, send, dialect: str
) -> None:
    """End a response whose last chunk did not end it: an empty last message when the
    body is whole; else the client left (499), or the instance went away mid-answer."""
    if not resp.complete:
        if gone.done():
            seen.status = CLIENT_GONE  # the client left: we cut the upstream ourselves
            return
        # The instance went away mid-answer. A stream ends with an error event the
        # client can show; a plain body cannot be completed, so the connection aborts.
        seen.status = 502
        if not streamed:
            raise ConnectionResetError(f"instance {rec.name!r} failed mid-response")
        await send(
            {
                "type": "http.response.body",
                "more_body": True,
                "body": _sse_error(
                    f"instance {rec.name!r} failed mid-response (connection lost)", 502, dialect
                ),
            }
        )
    await send({"type": "http.response.body", "body": b""})
