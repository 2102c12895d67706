"""The ``/logs`` answer of a supervised process (an instance, an rpc-server)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fastapi.responses import StreamingResponse

from corral.api.sse import SSE_HEADERS
from corral.supervisor import logs


async def log_answer(name: str, path: Path, tail: int, follow: bool):
    """The last ``tail`` lines of the log at ``path`` as ``{"name", "lines"}``; with
    ``follow``, an SSE stream of them and of every line written after."""
    if not follow:
        return {"name": name, "lines": await asyncio.to_thread(logs.tail, path, tail)}

    async def stream():
        async for line in logs.follow(path, start_lines=tail):
            yield f"data: {json.dumps(line)}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)
