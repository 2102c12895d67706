"""Server-sent events shared by the routes: one job's progress as a stream."""

from __future__ import annotations

import asyncio
import json

from fastapi.responses import StreamingResponse

from corral.events import Broadcaster

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE_SECONDS = 15.0
ACTIVE = ("queued", "running")


def job_stream(job, job_id: str, events: Broadcaster) -> StreamingResponse:
    """SSE of one job (a pull, a build): its view now, each of its events until it ends,
    then its final view; a comment every 15 s keeps idle connections open."""
    queue = events.subscribe()

    async def stream():
        try:
            yield f"data: {json.dumps(job.view())}\n\n"
            while job.state in ACTIVE:
                try:  # asyncio.timeout: wait_for on 3.11 can lose a cancellation
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        event = await queue.get()
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if event.get("id") == job_id:
                    yield f"data: {json.dumps(event)}\n\n"
            yield f"data: {json.dumps(job.view())}\n\n"
        finally:
            events.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)
