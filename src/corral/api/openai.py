"""/v1/*: the OpenAI-compatible endpoints, proxied to llama-server instances.

``POST /v1/{chat/completions,completions,embeddings,rerank,responses}`` are served by
:class:`Relay`, a plain ASGI middleware in front of FastAPI: the relay is the hot path of
every token a user sees, and routing, dependency injection and a response class per
request would cost more than the whole relay. It reads the body, finds (or starts) the
instance, sends the request over a kept-alive connection (:mod:`corral.upstream`) and
passes each socket read on as one message.

Only when the model must be loaded first does a streaming request get an early
``200 text/event-stream`` with SSE comments every ``router_heartbeat`` seconds, so
clients with read timeouts keep waiting; errors that happen before the first heartbeat
keep their own status. After the status line is sent, an error is an OpenAI-shaped
``data: {"error": ...}`` event.

The caller's scope comes from the guard through the ASGI scope (never from re-reading
keys here): only an ``admin`` caller may have a stopped user instance started (403
otherwise, see :mod:`corral.router`). The client's ``Authorization`` is never forwarded;
an instance launched with an API key gets its own (``Router.upstream_key``).
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Depends

from corral.api.deps import Daemon, get_daemon
from corral.errors import CorralError
from corral.router import (
    CLIENT_GONE,
    HOP_HEADERS,
    USAGE_BODY_MAX,
    USAGE_TAIL,
    Busy,
    Router,
    parse_request,
)
from corral.supervisor.states import State
from corral.upstream import UpstreamError, request_head

router = APIRouter(tags=["openai"])

ROUTED = ("chat/completions", "completions", "embeddings", "rerank", "responses")
ROUTED_PATHS = {f"/v1/{p}": p for p in ROUTED}
MAX_BODY = 64 * 1024 * 1024
KEEP_HEADERS = (b"content-type", b"cache-control", b"x-accel-buffering", b"content-length")
_HOP = {h.encode() for h in HOP_HEADERS}
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


def caller_scope(scope) -> str | None:
    """The caller's scope (``admin``, ``inference``) the guard found for an ASGI request."""
    state = scope.get("state")
    return state.get(CALLER_SCOPE) if isinstance(state, dict) else None


@router.get("/v1/models")
async def list_models(d: Daemon = Depends(get_daemon)) -> dict:
    """Every name a request may use: running instances, presets, indexed models."""
    return {"object": "list", "data": d.router.models()}


class _TooLarge(CorralError):
    status = 413
    code = "too_large"


def _sse_error(exc_or_message, status: int = 502) -> bytes:
    if isinstance(exc_or_message, CorralError):
        status, message = exc_or_message.status, exc_or_message.message
    else:
        message = str(exc_or_message)
    return b"data: " + json.dumps(openai_error(status, message, "server_error")).encode() + b"\n\n"


async def _send_error(send, exc: CorralError) -> None:
    typ = (
        "server_error"
        if exc.status >= 500
        else "permission_error"
        if exc.status == 403
        else "invalid_request_error"
    )
    body = json.dumps(openai_error(exc.status, exc.message, typ)).encode()
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
                raise _TooLarge(f"request body larger than {MAX_BODY // (1024 * 1024)} MiB")
            chunks.append(body)
        if not message.get("more_body", False):
            return b"".join(chunks)


class Relay:
    """ASGI wrapper of the FastAPI app: the routed ``POST /v1/*`` here, the rest to it."""

    def __init__(self, app) -> None:
        self.app = app  # the FastAPI app: its state holds the daemon

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        endpoint = ROUTED_PATHS.get(path) if path else None
        if endpoint is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        rt: Router = self.app.state.daemon.router
        try:
            await _serve(rt, endpoint, scope, receive, send)
        except ConnectionResetError:
            pass  # the client left; nothing to answer


async def _serve(rt: Router, endpoint: str, scope, receive, send) -> None:
    t0 = time.perf_counter()
    try:
        body = await _read_body(receive)
        model, stream = parse_request(body)
        admin = caller_scope(scope) == "admin"
        rec, target = rt.resolve(model, admin=admin)
    except CorralError as exc:  # OpenAI clients expect OpenAI's error shape
        rt.metrics.rejected.labels(exc.code).inc()
        await _send_error(send, exc)
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
                await _reject(rt, exc, started, send)
                return
        await _relay(rt, rec, label, endpoint, scope, body, t0, gone, send, started, stream)
    finally:
        gone.cancel()


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


async def _reject(rt: Router, exc: CorralError, started: bool, send) -> None:
    """Count a refused request and answer it: an SSE error event once heartbeats have
    started the stream, else an error response."""
    rt.metrics.rejected.labels(exc.code).inc()
    if started:
        await send({"type": "http.response.body", "body": _sse_error(exc)})
    else:
        await _send_error(send, exc)


async def _relay(
    rt: Router,
    rec,
    label: str,
    endpoint: str,
    scope,
    body: bytes,
    t0: float,
    gone: _Gone,
    send,
    started: bool,
    stream: bool,
) -> None:
    """Forward to the instance and stream its answer back, counting it afterwards."""
    host = "127.0.0.1" if rec.host in ("0.0.0.0", "::") else rec.host
    headers = [(k, v) for k, v in scope["headers"] if k not in _HOP]
    try:
        key = rt.upstream_key(rec)
    except UpstreamError as exc:
        await _reject(rt, exc, started, send)
        return
    if key is not None:
        headers.append((b"authorization", b"Bearer " + key.encode()))
    head = request_head(f"/v1/{endpoint}", host, rec.port, headers, len(body))
    usage = rt.begin(rec, label)
    status = 502
    ttft = None
    tail = bytearray()
    keep = True
    streamed = started
    resp = None
    on_gone = None
    ended = False
    try:
        try:
            if stream:  # llama-server answers a stream's head at once
                resp = await rt.upstream.request(host, rec.port, head, body)
            else:  # the head comes after the whole generation: watch for the client leaving
                resp = await _unless_gone(
                    rt.upstream.request(host, rec.port, head, body), gone.watch()
                )
                if resp is None:
                    status = CLIENT_GONE
                    return
        except UpstreamError as exc:
            exc = UpstreamError(f"instance {rec.name!r}: {exc.message}")
            if started:
                await send({"type": "http.response.body", "body": _sse_error(exc)})
            else:
                await _send_error(send, exc)
            return
        status = resp.status
        ctype = resp.header(b"content-type") or b""
        streamed = b"text/event-stream" in ctype
        on_gone = _aborter(resp)  # a client that leaves stops generation upstream
        if gone.future is not None:
            gone.future.add_done_callback(on_gone)
        if started:
            if status >= 400:  # the status line is sent: say it in the stream
                detail = (await resp.read(4096)).decode("utf-8", "replace")
                await send(
                    {
                        "type": "http.response.body",
                        "body": _sse_error(
                            f"instance {rec.name!r} answered {status}: {detail}", status
                        ),
                    }
                )
                return
        else:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(k, v) for k, v in resp.headers if k in KEEP_HEADERS],
                }
            )
        async for data in resp.chunks():
            if ttft is None:
                ttft = time.perf_counter() - t0
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
        if ended:
            return
        if not resp.complete:
            if gone.done():
                status = CLIENT_GONE  # the client left: we cut the upstream ourselves
                return
            # The instance went away mid-answer. A stream ends with an error event the
            # client can show; a plain body cannot be completed, so the connection aborts.
            status = 502
            if not streamed:
                raise ConnectionResetError(f"instance {rec.name!r} failed mid-response")
            await send(
                {
                    "type": "http.response.body",
                    "more_body": True,
                    "body": _sse_error(
                        f"instance {rec.name!r} failed mid-response (connection lost)"
                    ),
                }
            )
        await send({"type": "http.response.body", "body": b""})
    finally:
        if on_gone is not None and gone.future is not None:
            gone.future.remove_done_callback(on_gone)
        if resp is not None:
            resp.release()
        rt.end(
            rec,
            label,
            usage,
            status=status,
            ttft=ttft,
            elapsed=time.perf_counter() - t0,
            tail=bytes(tail) if keep else None,
            endpoint=endpoint,
        )
