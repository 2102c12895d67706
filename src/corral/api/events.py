"""GET /api/v1/events: one SSE stream of instance, router, pull, build and node events.

Each event is ``event: <topic>`` (instance, router, pull, build, node) and ``data:
<json>``; a node's is its state change (``{node, state, previous, error, at}``).
A comment line every 15 s keeps proxies and idle clients from closing the stream.
A slow reader loses events (bounded queues) rather than slowing the daemon down.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from corral.api.deps import Daemon, get_daemon

router = APIRouter(tags=["events"])
KEEPALIVE_SECONDS = 15.0


@router.get("/api/v1/events")
async def events(request: Request, d: Daemon = Depends(get_daemon)) -> StreamingResponse:
    """SSE: instance state changes, router starts/evictions, pull and build progress, and
    linked nodes going down or up."""
    sources = {
        "instance": d.supervisor.events,
        "router": d.router.events,
        "pull": d.pulls.events,
        "build": d.builds.events,
    }
    nodes = getattr(request.app.state, "nodes", None)
    if nodes is not None:
        sources["node"] = nodes.events
    queues = {topic: b.subscribe() for topic, b in sources.items()}

    async def stream():
        getters: dict[asyncio.Task, str] = {}
        try:
            yield b": connected\n\n"
            while True:
                for topic, q in queues.items():
                    if topic not in getters.values():
                        getters[asyncio.ensure_future(q.get())] = topic
                done, _ = await asyncio.wait(
                    getters, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    yield b": keep-alive\n\n"
                for task in done:
                    topic = getters.pop(task)
                    data = json.dumps(task.result(), default=str)
                    yield f"event: {topic}\ndata: {data}\n\n".encode()
        finally:
            for task in getters:
                task.cancel()
            for topic, q in queues.items():
                sources[topic].unsubscribe(q)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
