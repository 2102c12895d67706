"""/api/v1/fit: the memory plan of a launch, without launching.

The body is a launch's (:class:`~corral.api.instances.LaunchRequest`: the ``*``
defaults and the preset merge as for a launch) plus ``devices`` (a simulated spec,
``12GiB,8GiB`` or ``none``; default: the GPUs detected now) and ``margin_mib``. The
answer is ``corral fit --json``'s. Secret flag values come back masked.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import Field

from corral.api.deps import Daemon, get_daemon
from corral.api.instances import LaunchRequest, launch_spec
from corral.redact import redact_argv

router = APIRouter(prefix="/api/v1", tags=["fit"])


class FitRequest(LaunchRequest):
    """A launch body, plus the devices to plan for and the margin kept free on each."""

    devices: str | None = Field(
        default=None,
        max_length=512,
        examples=["12GiB,8GiB", "4x8GiB", "none"],
        description="simulated devices; default: detected now",
    )
    margin_mib: float | None = Field(
        default=None, ge=0, le=2**30, description="MiB kept free per device (default 1024)"
    )


@router.post("/fit")
async def fit(req: FitRequest, d: Daemon = Depends(get_daemon)) -> dict:
    """Which GPUs, ``-ngl``, ``-ts``, context and KV cache fit this launch (see
    ``corral fit``), counting what the running instances hold; nothing is started.
    Flags the user gave (``-ngl`` included) are kept and planned around."""
    from corral.errors import UsageError
    from corral.fit.devices import MiB

    spec = await launch_spec(req, d)
    margin = None if req.margin_mib is None else int(req.margin_mib * MiB)
    plan = await d.supervisor.plan_fit(spec, devices=req.devices, margin=margin, always=True)
    if plan is None:
        raise UsageError(
            f"{req.model or req.preset}: no memory plan can be made for this "
            "model (its GGUF header describes no layers, or cannot be read)"
        )
    view = plan.view()
    view["flags"] = redact_argv(view["flags"])
    return view
