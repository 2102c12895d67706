"""/v1/*: the OpenAI-compatible endpoints, proxied to llama-server instances."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from corral.api.deps import Daemon, get_daemon
from corral.errors import CorralError
from corral.router import openai_error, parse_model

router = APIRouter(tags=["openai"])

ROUTED = ("chat/completions", "completions", "embeddings", "rerank", "responses")


@router.get("/v1/models")
async def list_models(d: Daemon = Depends(get_daemon)) -> dict:
    return {"object": "list", "data": d.router.models()}


async def _proxy(path: str, request: Request, d: Daemon):
    body = await request.body()
    try:
        model = parse_model(body)
        rec = await d.router.instance_for(model)
        upstream = await d.router.forward(rec, path, body, dict(request.headers))
    except CorralError as exc:  # OpenAI clients expect OpenAI's error shape
        return JSONResponse(openai_error(exc.status, exc.message), status_code=exc.status)

    async def relay():
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()  # client gone or done: close upstream (stops generation)

    keep = {k: v for k, v in upstream.headers.items()
            if k.lower() in ("content-type", "cache-control", "x-accel-buffering")}
    return StreamingResponse(relay(), status_code=upstream.status_code, headers=keep)


def _route(path: str):
    async def endpoint(request: Request, d: Daemon = Depends(get_daemon)):
        return await _proxy(path, request, d)

    endpoint.__name__ = "v1_" + path.replace("/", "_")
    endpoint.__doc__ = f"OpenAI-compatible POST /v1/{path}, routed by the body's model."
    return endpoint


for _path in ROUTED:
    router.add_api_route(f"/v1/{_path}", _route(_path), methods=["POST"])
