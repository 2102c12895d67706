"""Fan-out of events (instance state changes, pull progress) to SSE subscribers."""

from __future__ import annotations

import asyncio


class Broadcaster:
    """Bounded queues, one per subscriber; a slow subscriber drops events, never blocks."""

    def __init__(self, maxsize: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue] = set()
        self._maxsize = maxsize

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=self._maxsize)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subscribers.discard(q)

    def publish(self, payload: dict) -> None:
        """Call on the event loop's thread (use loop.call_soon_threadsafe from others)."""
        for q in list(self._subscribers):
            try:
                q.put_nowait(payload)
            except asyncio.QueueFull:
                pass
