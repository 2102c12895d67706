"""/api/v1/builds: llama-server binaries registered with corral, and update jobs."""

from __future__ import annotations

import asyncio
import pathlib
import shutil
from typing import Literal

from fastapi import APIRouter, Depends, Path
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from corral.api.deps import Daemon, get_daemon
from corral.api.sse import job_stream
from corral.builds.resolve import MAX_BUILD_ID, binary_version, resolve_binary
from corral.builds.tools import build_view
from corral.errors import Conflict
from corral.store import builds as table

router = APIRouter(prefix="/api/v1/builds", tags=["builds"])


class AddBuild(BaseModel):
    path: str = Field(min_length=1, max_length=4096)
    default: bool = False


@router.get("")
async def list_builds(d: Daemon = Depends(get_daemon)) -> list[dict]:
    return [build_view(b) for b in table.list_all(d.store)]


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
async def use_build(
    build_id: int = Path(ge=1, le=MAX_BUILD_ID), d: Daemon = Depends(get_daemon)
) -> dict:
    table.set_default(d.store, build_id)
    return table.get(d.store, build_id).to_dict()


@router.delete("/{build_id}")
async def remove_build(
    build_id: int = Path(ge=1, le=MAX_BUILD_ID), d: Daemon = Depends(get_daemon)
) -> dict:
    """Forget a build (``corral builds rm``): 409 while an instance that is not at rest
    runs its binary. Its files are deleted only when corral installed them: one folder
    directly under CORRAL_HOME/bin, the binary deeper inside (release archives put it
    in ``build/bin``). ``deleted`` is that folder, or null when the files stay."""
    from corral.supervisor.states import RESTING

    rec = table.get(d.store, build_id)
    users = [r.name for r in d.supervisor.list() if r.binary == rec.path and r.state not in RESTING]
    if users:
        raise Conflict(f"build {build_id} is used by running instance(s): {', '.join(users)}")
    table.remove(d.store, build_id)
    folder = _installed_folder(d.settings.bin_dir, rec.path)
    if folder is not None:
        await asyncio.to_thread(shutil.rmtree, folder, True)
    return {"build": rec.to_dict(), "deleted": None if folder is None else str(folder)}


def _installed_folder(bin_dir: pathlib.Path, binary: str) -> pathlib.Path | None:
    """The folder under ``bin_dir`` that corral installed ``binary`` in, or None (the
    rule of cli/builds.py's local ``builds rm``)."""
    try:
        rel = pathlib.Path(binary).resolve().relative_to(bin_dir.resolve())
    except (ValueError, OSError):
        return None
    return bin_dir / rel.parts[0] if len(rel.parts) > 1 else None


# -- update jobs (`corral update` run by the daemon) -------------------------------------


class UpdateBody(BaseModel):
    """The options of ``corral update``; ``from`` is a Python keyword, hence the alias."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    from_: Literal["release", "source", "pypi"] = Field("release", alias="from")
    backend: Literal["auto", "cpu", "cuda", "rocm", "vulkan", "metal"] = "auto"
    version: str | None = Field(
        None, min_length=1, max_length=100, description="release tag, e.g. b6000 (default: newest)"
    )
    source: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="with from=source: a directory, tarball URL or tag",
    )
    force: bool = False


@router.post("/update", status_code=202)
async def start_update(req: UpdateBody, d: Daemon = Depends(get_daemon)) -> dict:
    """Start (or join the identical running) update; follow it at .../jobs/{id}/events."""
    job = await d.builds.start(req.from_, req.backend, req.version, req.source, req.force)
    return job.view()


@router.get("/jobs")
async def list_jobs(d: Daemon = Depends(get_daemon)) -> list[dict]:
    return [j.view() for j in d.builds.list()]


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, d: Daemon = Depends(get_daemon)) -> dict:
    return d.builds.get(job_id).view()


@router.delete("/jobs/{job_id}")
async def cancel_job(job_id: str, d: Daemon = Depends(get_daemon)) -> dict:
    """Cancel at the job's next progress point; answers once it ended or after 10 s."""
    d.builds.cancel(job_id)
    return (await d.builds.wait(job_id, timeout=10)).view()


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, d: Daemon = Depends(get_daemon)) -> StreamingResponse:
    """SSE: the job's view now, then every change until it ends, then its final view."""
    return job_stream(d.builds.get(job_id), job_id, d.builds.events)
