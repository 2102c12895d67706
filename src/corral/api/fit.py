"""/api/v1/fit: the memory plan of a launch, without launching.

The body is a launch's (:class:`~corral.api.instances.LaunchRequest`: the ``*``
defaults and the preset merge as for a launch) plus ``devices`` (a simulated spec,
``12GiB,8GiB`` or ``none``; default: the GPUs detected now) and ``margin_mib``. The
answer is ``corral fit --json``'s. Secret flag values come back masked.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from pydantic import Field

from corral import presets
from corral.api.deps import Daemon, get_daemon
from corral.api.instances import LaunchRequest
from corral.redact import redact_argv

router = APIRouter(prefix="/api/v1", tags=["fit"])


class FitRequest(LaunchRequest):
    """A launch body, plus the devices to plan for and the margin kept free on each."""

    devices: str | None = Field(default=None, max_length=512,
                                examples=["12GiB,8GiB", "4x8GiB", "none"],
                                description="simulated devices; default: detected now")
    margin_mib: float | None = Field(default=None, ge=0, le=2**30,
                                     description="MiB kept free per device (default 1024)")


@router.post("/fit")
async def fit(req: FitRequest, d: Daemon = Depends(get_daemon)) -> dict:
    """Which GPUs, ``-ngl``, ``-ts``, context and KV cache fit this launch (see
    ``corral fit``); nothing is started."""
    from corral.fit.devices import MiB
    from corral.fit.planner import fit as plan_fit

    spec = await presets.compose(
        d.supervisor, model=req.model, preset=req.preset, flags=req.flags, name=req.name,
        port=req.port, restart=req.restart, env=req.env, pinned=req.pinned,
        idle_ttl=req.idle_ttl, aliases=req.aliases, binary=req.binary, build_id=req.build)
    launch = await d.supervisor.plan(spec)  # the command line a launch would run
    catalog = await d.supervisor.catalog(spec.binary, spec.build_id)
    pairs = _launch_pairs(catalog, launch["argv"][1:])
    margin = None if req.margin_mib is None else int(req.margin_mib * MiB)
    plan, _ = await asyncio.to_thread(plan_fit, launch["model"], pairs, catalog=catalog,
                                      devices_spec=req.devices, margin=margin)
    view = plan.view()
    view["flags"] = redact_argv(view["flags"])
    return view


def _launch_pairs(catalog, argv: list[str]) -> list:
    """The flags of a launch's argv, without the ones corral owns (model, host, port)."""
    owned = {f.long for f in (catalog.lookup(n) for n in ("--model", "--port", "--host"))
             if f is not None}
    return [(n, v) for n, v in catalog.normalize(argv) if n not in owned]
