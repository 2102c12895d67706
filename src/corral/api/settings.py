"""/api/v1/settings (being written)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["settings"])
