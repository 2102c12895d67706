"""/api/v1/presets (being written: see issue 5/6)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["presets"])
