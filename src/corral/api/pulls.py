"""/api/v1/pulls (download jobs) and /api/v1/hub (search, quants)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from corral.api.deps import Daemon, get_daemon
from corral.api.sse import job_stream
from corral.hub import SEARCH_LIMIT

router = APIRouter(tags=["models"])


class PullRequest(BaseModel):
    ref: str = Field(
        min_length=3, max_length=1024, examples=["unsloth/gemma-3-270m-it-GGUF:Q4_K_M"]
    )


@router.post("/api/v1/pulls", status_code=202)
async def start_pull(req: PullRequest, d: Daemon = Depends(get_daemon)) -> dict:
    """Start (or join) a pull; progress at GET /api/v1/pulls/{id} and .../events."""
    return (await d.pulls.start(req.ref)).view()


@router.get("/api/v1/pulls")
async def list_pulls(d: Daemon = Depends(get_daemon)) -> list[dict]:
    return [j.view() for j in d.pulls.list()]


@router.get("/api/v1/pulls/{pull_id}")
async def get_pull(pull_id: str, d: Daemon = Depends(get_daemon)) -> dict:
    return d.pulls.get(pull_id).view()


@router.delete("/api/v1/pulls/{pull_id}")
async def cancel_pull(pull_id: str, d: Daemon = Depends(get_daemon)) -> dict:
    """Cancel a running pull; its partial files stay for a later resume."""
    d.pulls.cancel(pull_id)
    return (await d.pulls.wait(pull_id, timeout=10)).view()


@router.get("/api/v1/pulls/{pull_id}/events")
async def pull_events(pull_id: str, d: Daemon = Depends(get_daemon)) -> StreamingResponse:
    """SSE: the job's state now, then every progress update until it ends."""
    return job_stream(d.pulls.get(pull_id), pull_id, d.pulls.events)


@router.get("/api/v1/hub/search")
async def hub_search(
    q: str = Query(min_length=1, max_length=200),
    limit: int = Query(20, ge=1, le=SEARCH_LIMIT),
    d: Daemon = Depends(get_daemon),
) -> list[dict]:
    hub = d.pulls.hub_factory()
    return await asyncio.to_thread(hub.search, q, limit)


@router.get("/api/v1/hub/quants")
async def hub_quants(
    repo: str = Query(min_length=3, max_length=200),
    revision: str = "main",
    d: Daemon = Depends(get_daemon),
) -> list[dict]:
    from corral.hub import parse_ref

    ref = parse_ref(repo)
    hub = d.pulls.hub_factory()
    groups = await asyncio.to_thread(hub.quants, ref.repo, revision)
    return [g.to_dict() for g in groups]
