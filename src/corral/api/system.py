"""/api/v1/system: this host's CPU, RAM, GPUs, the backend corral would pick, builds."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from corral.api.deps import Daemon, get_daemon

router = APIRouter(prefix="/api/v1/system", tags=["system"])


@router.get("")
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
    data["builds"] = [b.to_dict() for b in await asyncio.to_thread(builds.list_all, d.store)]
    return data
