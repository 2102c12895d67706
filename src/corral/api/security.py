"""Who may call the daemon: API keys, and the Host/Origin rules for browsers."""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from corral.api import errors
from corral.settings import Settings

OPEN_PATHS = ("/healthz",)


def _allowed_hosts(settings: Settings) -> set[str] | None:
    """Host header values naming this daemon; None = any (bound beyond loopback, key required)."""
    from corral.api.server import is_loopback

    if not is_loopback(settings.host):
        return None
    port = settings.port
    names = {"127.0.0.1", "localhost", "[::1]", settings.host.lower()}
    return {f"{n}:{port}" for n in names} | (names if port == 80 else set())



def install(app: FastAPI, settings: Settings) -> None:
    if settings.api_key:
        expected = f"Bearer {settings.api_key}".encode()

        @app.middleware("http")
        async def require_key(request: Request, call_next):
            if request.url.path not in OPEN_PATHS:
                given = request.headers.get("authorization", "").encode()
                if not hmac.compare_digest(given, expected):
                    return JSONResponse(
                        errors.error_body("unauthorized", "missing or wrong API key"),
                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return await call_next(request)

    allowed_hosts = _allowed_hosts(settings)

    @app.middleware("http")
    async def same_origin_only(request: Request, call_next):
        # Loopback is no free pass for browsers: a page on another site may reach
        # 127.0.0.1 through DNS rebinding (foreign Host) or send simple cross-site
        # requests (foreign Origin). Neither may touch the API.
        host = request.headers.get("host", "").lower()
        if allowed_hosts is not None and host not in allowed_hosts:
            return JSONResponse(errors.error_body("forbidden_host", f"Host {host!r} is not this daemon"),
                                status_code=403)
        origin = request.headers.get("origin")
        if origin is not None and origin.lower().split("://", 1)[-1] not in (allowed_hosts or {host}):
            return JSONResponse(errors.error_body("forbidden_origin",
                                                  f"cross-origin request from {origin!r} refused"),
                                status_code=403)
        return await call_next(request)

