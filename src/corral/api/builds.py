"""/api/v1/builds: llama-server binaries registered with corral."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from corral.api.deps import Daemon, get_daemon
from corral.builds.resolve import binary_version, resolve_binary
from corral.store import builds as table

router = APIRouter(prefix="/api/v1/builds", tags=["builds"])


class AddBuild(BaseModel):
    path: str = Field(min_length=1, max_length=4096)
    default: bool = False


@router.get("")
async def list_builds(d: Daemon = Depends(get_daemon)) -> list[dict]:
    return [b.to_dict() for b in table.list_all(d.store)]


@router.post("", status_code=201)
async def add_build(req: AddBuild, d: Daemon = Depends(get_daemon)) -> dict:
    resolved = resolve_binary(d.settings, None, req.path)
    version = await asyncio.to_thread(binary_version, resolved.path)
    await d.supervisor.catalog(str(resolved.path))  # refuse a binary whose flags cannot be read
    rec = table.add(d.store, str(resolved.path), version)
    if req.default:
        table.set_default(d.store, rec.id)
        rec = table.get(d.store, rec.id)
    return rec.to_dict()


@router.post("/{build_id}/default")
async def use_build(build_id: int, d: Daemon = Depends(get_daemon)) -> dict:
    table.set_default(d.store, build_id)
    return table.get(d.store, build_id).to_dict()
