"""The web UI: static files of ``corral/web`` served at ``/`` (the shell) and ``/ui/`` (assets).

No build step: the files on disk are what the browser runs. Every answer says
``Cache-Control: no-cache`` (the browser revalidates with the ETag, so an upgraded corral
is never served stale scripts) and ``nosniff``; the HTML shell also carries a strict
Content-Security-Policy, which is why the UI has no inline script or style at all.

Nothing the daemon serves loads from another origin. FastAPI's ``/docs`` and ``/redoc``
are off (``create_app``): they pull swagger-ui/redoc from a CDN, without integrity checks,
into the daemon's origin, where a script reads the same API the keys guard. Serving them
from the package was weighed: the one PyPI package with swagger-ui's dist files
(``swagger-ui-bundle`` 1.1.0) ships swagger-ui 4.15.5 from 2022, 8.5 MB, for a page the
UI does not need. The schema stays at ``/openapi.json`` for any local tool to render.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from corral.errors import NotFound, UsageError
from corral.types import inside

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

#: Served suffixes and their types (explicit: the OS mime table may lack or mislabel them,
#: and ES modules need a JavaScript type).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

_COMMON = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _file(path: Path) -> FileResponse:
    headers = dict(_COMMON)
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = CSP
        headers["X-Frame-Options"] = "DENY"
    return FileResponse(path, media_type=CONTENT_TYPES[path.suffix], headers=headers)


def asset_path(rel: str) -> Path:
    """The file under WEB_DIR that ``/ui/<rel>`` names; NotFound for anything else
    (unknown suffix, a directory, or a path escaping WEB_DIR through ``..`` or a link)."""
    try:
        path = inside(WEB_DIR, rel)
        found = path.suffix in CONTENT_TYPES and path.is_file()
    except (UsageError, OSError):  # outside, a NUL byte, a name too long for the filesystem
        found = False
    if not found:
        raise NotFound(f"no UI file {rel[:200]!r}")
    return path


def install(app: FastAPI) -> None:
    """Serve the shell at ``/`` and the assets under ``/ui/`` (kept out of the OpenAPI doc)."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> FileResponse:
        return _file(WEB_DIR / "index.html")

    @app.api_route("/ui/{rel:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def asset(rel: str) -> FileResponse:
        return _file(asset_path(rel))
