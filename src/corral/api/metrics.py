"""GET /metrics (Prometheus text format) and GET /api/v1/usage (the router's counters)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from corral.api.deps import Daemon, get_daemon

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(d: Daemon = Depends(get_daemon)) -> Response:
    """Per model/instance requests, errors, TTFT and latency histograms, tokens, tok/s,
    load time, restarts, state, queue depth; per GPU memory used/total; per instance and
    device the projected bytes of its memory plan (and llama-server's real figures once
    loaded); per device (``gpu0``..., ``host``) the projected sum and the driver's use."""
    await asyncio.to_thread(d.router.metrics.refresh_gpus)  # may run nvidia-smi
    return Response(d.router.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/usage")
async def usage(d: Daemon = Depends(get_daemon)) -> dict:
    """Requests, errors, tokens in/out, last tok/s and in-flight count per instance and model."""
    return d.router.usage()
