"""/api/v1/system: this host's CPU, RAM, GPUs, the backend corral would pick, builds.

/api/v1/schema: the names, patterns and ranges the web UI checks before it sends
(:func:`corral.types.schema`), so the JavaScript does not type them again.
"""

from __future__ import annotations

import asyncio
import os

import psutil
from fastapi import APIRouter, Depends

from corral.api.deps import Daemon, get_daemon

router = APIRouter(prefix="/api/v1", tags=["system"])
psutil.cpu_percent(interval=None)  # primes the counter: each call reports use since the last


@router.get("/system")
async def system(d: Daemon = Depends(get_daemon)) -> dict:
    """Host detection (re-run on every call: free VRAM and RAM are live) plus builds."""
    from corral import gpu
    from corral.store import builds

    host = await asyncio.to_thread(gpu.detect)
    backend, why = gpu.best_backend(host)
    data = host.to_dict()
    data["backend"] = {"name": backend, "reason": why}
    data["cuda_architectures"] = gpu.cuda_architectures(host)
    data["amdgpu_targets"] = gpu.amdgpu_targets(host)
    data["cpu_percent"] = psutil.cpu_percent(interval=None)  # since the previous call
    data["load_average"] = list(os.getloadavg())
    data["builds"] = [b.to_dict() for b in await asyncio.to_thread(builds.list_all, d.store)]
    return data


@router.get("/schema")
async def schema() -> dict:
    """Instance-name pattern, restart policies, port range, environment-name pattern."""
    from corral import types

    return types.schema()
