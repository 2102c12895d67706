"""/api/v1/flags: the flag catalog of a llama-server build."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from corral import redact
from corral.api.deps import Daemon, get_daemon
from corral.builds.resolve import MAX_BUILD_ID, resolve_binary

router = APIRouter(prefix="/api/v1/flags", tags=["flags"])


@router.get("")
async def flags(
    q: str | None = Query(None, max_length=200),
    build: int | None = Query(None, ge=1, le=MAX_BUILD_ID),
    d: Daemon = Depends(get_daemon),
) -> dict:
    """Flags of the default binary or of a registered build (never an arbitrary path:
    a GET must not make the daemon execute a file the caller names). ``binary`` is the
    file they come from (what ``corral flags --node`` names)."""
    catalog = await d.supervisor.catalog(None, build)
    found = catalog.search(q) if q else catalog.flags
    return {
        "binary": str(resolve_binary(d.settings, d.store, None, build).path),
        "version": catalog.version,
        "sections": catalog.sections,
        "count": len(found),
        "flags": [f.to_dict() for f in found],
        "secret_flags": sorted(redact.SECRET_FLAGS),
    }  # the UI masks these as typed
