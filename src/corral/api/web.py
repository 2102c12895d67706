"""The web UI: static files of corral/web served at /."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount the UI (written in issue 6)."""
