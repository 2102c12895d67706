"""GET /api/v1/events: one SSE stream of instance, pull and build events."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["events"])
