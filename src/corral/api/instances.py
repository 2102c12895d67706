"""/api/v1/instances: launch, list, inspect, stop, start, restart, remove, logs.

Every instance is shown through :func:`instance_view`, and a plan through :func:`_plan_view`:
secrets in flags and env (``--api-key K``) come out as ``***`` (:mod:`corral.redact`).
Only callers that pass the guard as admin reach these routes, so a start, stop, restart
or removal here is an admin's decision, which the router respects (``Router.admin_acted``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from corral import presets
from corral.api.deps import Daemon, get_daemon
from corral.api.log_stream import log_answer
from corral.launchspec import LaunchSpec
from corral.redact import SECRET_FLAGS, redact_argv, redact_env, redact_pairs
from corral.supervisor.supervisor import instance_view
from corral.types import DEFAULT_RESTART, NAME_MAX, Port, Restart

router = APIRouter(prefix="/api/v1/instances", tags=["instances"])


class LaunchRequest(BaseModel):
    """Launch a llama-server. ``flags`` are llama-server's own arguments, as tokens.

    The ``*`` preset's defaults, then the ``preset`` named here, then these fields apply
    (later wins; flags merge flag by flag). ``model`` may be left out when the preset
    names one.
    """

    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="GGUF path, or a model of the index",
    )
    preset: str | None = Field(default=None, min_length=1, max_length=NAME_MAX)
    name: str | None = Field(default=None, max_length=NAME_MAX)
    port: Port | None = None
    flags: list[str] = Field(
        default_factory=list, max_length=512, examples=[["-c", "4096", "-ngl", "99"]]
    )
    restart: Restart | None = Field(
        default=None, description=f"default: the preset's, else {DEFAULT_RESTART}"
    )
    env: dict[str, str] = Field(
        default_factory=dict, max_length=64, examples=[{"CUDA_VISIBLE_DEVICES": "0"}]
    )
    pinned: bool | None = Field(default=None, description="never stopped when idle nor evicted")
    idle_ttl: float | None = Field(
        default=None, ge=0, le=10 * 365 * 86400, description="seconds unused before stop; 0 = never"
    )
    aliases: list[str] = Field(default_factory=list, max_length=32)
    binary: str | None = Field(default=None, max_length=4096)
    build: int | None = None
    fit: bool = Field(
        default=True,
        description="plan memory (-ngl, -ts, -c, KV types) on the "
        "devices' free memory; false launches exactly the flags given",
    )
    wait: bool = Field(default=False, description="answer only once the instance is ready")
    timeout: float | None = Field(default=None, gt=0, le=86400)


@router.get("")
async def list_instances(d: Daemon = Depends(get_daemon)) -> list[dict]:
    return [instance_view(r) for r in d.supervisor.list()]


async def launch_spec(req: LaunchRequest, d: Daemon) -> LaunchSpec:
    """The LaunchSpec of a launch body: ``*`` defaults < its preset < its fields."""
    sup = d.supervisor
    return await presets.compose(
        sup.store,
        sup.catalog,
        taken=[r.name for r in sup.list()],
        model=req.model,
        preset=req.preset,
        flags=req.flags,
        name=req.name,
        port=req.port,
        restart=req.restart,
        env=req.env,
        pinned=req.pinned,
        idle_ttl=req.idle_ttl,
        aliases=req.aliases,
        binary=req.binary,
        build_id=req.build,
        fit=req.fit,
    )


@router.post("/plan")
async def plan(req: LaunchRequest, d: Daemon = Depends(get_daemon)) -> dict:
    """The command line a launch with this body would run (``*`` defaults and preset
    merged, flags validated), without running anything."""
    return _plan_view(await d.supervisor.plan(await launch_spec(req, d)))


def _plan_view(plan: dict) -> dict:
    """A plan as shown: secret values masked; ``secret_flags`` tells the UI which flags
    hold one, so its own preview of the command line masks them as well."""
    out = dict(plan)
    if "argv" in out:
        out["argv"] = redact_argv(out["argv"])
    flags = out.get("flags")
    if isinstance(flags, list) and all(isinstance(p, (list, tuple)) for p in flags):
        out["flags"] = redact_pairs(flags)
    if isinstance(out.get("env"), dict):
        out["env"] = redact_env(out["env"])
    out["secret_flags"] = sorted(SECRET_FLAGS)
    return out


@router.post("", status_code=201)
async def launch(req: LaunchRequest, d: Daemon = Depends(get_daemon)) -> dict:
    rec = await d.supervisor.launch(await launch_spec(req, d))
    if req.wait:
        rec = await d.supervisor.wait_ready(rec.name, req.timeout)
    return instance_view(rec)


@router.get("/{name}")
async def get_instance(name: str, d: Daemon = Depends(get_daemon)) -> dict:
    return instance_view(d.supervisor.get(name))


@router.delete("/{name}")
async def remove(name: str, d: Daemon = Depends(get_daemon)) -> dict:
    rec = d.supervisor.get(name)
    d.router.admin_acted(rec.name)
    await d.supervisor.remove(rec.name)
    return {"removed": rec.name}


@router.post("/{name}/stop")
async def stop(name: str, d: Daemon = Depends(get_daemon)) -> dict:
    d.router.admin_acted(d.supervisor.get(name).name)
    return instance_view(await d.supervisor.stop(name))


@router.post("/{name}/start")
async def start(name: str, wait: bool = False, d: Daemon = Depends(get_daemon)) -> dict:
    d.router.admin_acted(d.supervisor.get(name).name)
    rec = await d.supervisor.start_instance(name)
    if wait:
        rec = await d.supervisor.wait_ready(rec.name)
    return instance_view(rec)


@router.post("/{name}/restart")
async def restart(name: str, wait: bool = False, d: Daemon = Depends(get_daemon)) -> dict:
    d.router.admin_acted(d.supervisor.get(name).name)
    rec = await d.supervisor.restart(name)
    if wait:
        rec = await d.supervisor.wait_ready(rec.name)
    return instance_view(rec)


@router.get("/{name}/logs", response_model=None)
async def instance_logs(
    name: str,
    tail: int = Query(100, ge=0, le=100_000),
    follow: bool = False,
    d: Daemon = Depends(get_daemon),
):
    """The last ``tail`` lines; with ``follow=true`` an SSE stream of new lines."""
    rec = d.supervisor.get(name)
    return await log_answer(rec.name, d.supervisor.log_path(rec.name), tail, follow)
