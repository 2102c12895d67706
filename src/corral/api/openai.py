"""/v1/*: the OpenAI-compatible endpoints, proxied to llama-server instances.

The hot path (the model's instance is ready) is: read the body, find the instance, open
the upstream request, relay its bytes. Only when the model must be loaded first does a
streaming request get an early ``200 text/event-stream`` with SSE comments every
``router_heartbeat`` seconds, so clients with read timeouts keep waiting; errors that
happen before the first heartbeat keep their own status.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from corral.api.deps import Daemon, get_daemon
from corral.errors import CorralError
from corral.router import USAGE_BODY_MAX, USAGE_TAIL, Busy, Router, openai_error, parse_request
from corral.supervisor.states import State

router = APIRouter(tags=["openai"])

ROUTED = ("chat/completions", "completions", "embeddings", "rerank", "responses")
KEEP_HEADERS = ("content-type", "cache-control", "x-accel-buffering")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/v1/models")
async def list_models(d: Daemon = Depends(get_daemon)) -> dict:
    """Every name a request may use: running instances, presets, indexed models."""
    return {"object": "list", "data": d.router.models()}


def _error_response(exc: CorralError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else None
    typ = "server_error" if exc.status >= 500 else "invalid_request_error"
    return JSONResponse(openai_error(exc.status, exc.message, typ), status_code=exc.status,
                        headers=headers)


def _sse_error(exc_or_message, status: int = 502) -> bytes:
    if isinstance(exc_or_message, CorralError):
        status, message = exc_or_message.status, exc_or_message.message
    else:
        message = str(exc_or_message)
    return b"data: " + json.dumps(openai_error(status, message, "server_error")).encode() + b"\n\n"


async def _proxy(path: str, request: Request, d: Daemon):
    t0 = time.perf_counter()
    body = await request.body()
    rt = d.router
    try:
        model, stream = parse_request(body)
        rec, target = rt.resolve(model)
    except CorralError as exc:  # OpenAI clients expect OpenAI's error shape
        rt.metrics.rejected.labels(exc.code).inc()
        return _error_response(exc)
    headers = dict(request.headers)
    if rec is not None and State(rec.state) is State.READY:
        return await _forward(rt, rec, target.label, path, body, headers, stream, t0)
    waiting = asyncio.ensure_future(rt.instance_for(model))
    waiting.add_done_callback(_retrieve)  # a client may leave before the load ends
    if stream:
        done, _ = await asyncio.wait({waiting}, timeout=d.settings.router_heartbeat)
        if not done:
            return StreamingResponse(
                _heartbeats_then_relay(rt, waiting, model, path, body, headers, t0),
                media_type="text/event-stream", headers=SSE_HEADERS)
    try:
        rec, label = await waiting
    except CorralError as exc:
        rt.metrics.rejected.labels(exc.code).inc()
        return _error_response(exc)
    return await _forward(rt, rec, label, path, body, headers, stream, t0)


def _retrieve(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()


async def _forward(rt: Router, rec, label: str, path: str, body: bytes, headers: dict,
                   stream: bool, t0: float):
    try:
        upstream = await rt.forward(rec, path, body, headers)
    except CorralError as exc:
        rt.metrics.errors.labels(label, rec.name).inc()
        return _error_response(exc)
    keep = {k: v for k, v in upstream.headers.items() if k.lower() in KEEP_HEADERS}
    streamed = "text/event-stream" in upstream.headers.get("content-type", "")
    relay = _relay(rt, rec, label, upstream, t0, streamed, path)
    return StreamingResponse(relay, status_code=upstream.status_code, headers=keep)


async def _relay(rt: Router, rec, label: str, upstream: httpx.Response, t0: float,
                 streamed: bool, path: str):
    """Yield upstream bytes as they come; afterwards count them (usage, tok/s, metrics)."""
    usage = rt.begin(rec, label)
    ttft = None
    tail = bytearray()
    keep = True
    status = upstream.status_code
    try:
        try:
            async for chunk in upstream.aiter_raw():
                if ttft is None:
                    ttft = time.perf_counter() - t0
                if keep:
                    tail += chunk
                    if streamed:
                        if len(tail) > 2 * USAGE_TAIL:
                            del tail[:-USAGE_TAIL]
                    elif len(tail) > USAGE_BODY_MAX:
                        keep, tail = False, bytearray()
                yield chunk
        except httpx.HTTPError as exc:
            # The instance went away mid-answer. A stream ends with an error event the
            # client can show; a plain body cannot be completed, so the connection aborts.
            status = 502
            gone = f"instance {rec.name!r} failed mid-response ({type(exc).__name__})"
            if not streamed:
                raise
            yield _sse_error(gone)
    finally:
        await upstream.aclose()  # client gone or done: close upstream (stops generation)
        rt.end(rec, label, usage, status=status, ttft=ttft, elapsed=time.perf_counter() - t0,
               tail=bytes(tail) if keep else None, streamed=streamed, endpoint=path)


async def _heartbeats_then_relay(rt: Router, waiting: asyncio.Future, model: str, path: str,
                                 body: bytes, headers: dict, t0: float):
    """SSE comments while the model loads, then the upstream stream (or an error event)."""
    beat = rt.settings.router_heartbeat
    comment = f": loading {model}\n\n".encode()
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=beat)
        if done:
            break
        yield comment
    try:
        rec, label = waiting.result()
        upstream = await rt.forward(rec, path, body, headers)
    except CorralError as exc:
        rt.metrics.rejected.labels(exc.code).inc()
        yield _sse_error(exc)
        return
    if upstream.status_code >= 400:  # the status line is sent: say it in the stream
        try:
            detail = (await upstream.aread())[:4096].decode("utf-8", "replace")
        finally:
            await upstream.aclose()
        rt.metrics.errors.labels(label, rec.name).inc()
        yield _sse_error(f"instance {rec.name!r} answered {upstream.status_code}: {detail}",
                         upstream.status_code)
        return
    async for chunk in _relay(rt, rec, label, upstream, t0, True, path):
        yield chunk


def _route(path: str):
    async def endpoint(request: Request, d: Daemon = Depends(get_daemon)) -> Response:
        return await _proxy(path, request, d)

    endpoint.__name__ = "v1_" + path.replace("/", "_")
    endpoint.__doc__ = f"OpenAI-compatible POST /v1/{path}, routed by the body's model."
    return endpoint


for _path in ROUTED:
    router.add_api_route(f"/v1/{_path}", _route(_path), methods=["POST"])
