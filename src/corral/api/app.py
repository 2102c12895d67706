"""The FastAPI application of the daemon."""

from __future__ import annotations

import hmac
import os
import time
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from corral import __version__
from corral.api import builds, errors, flags, instances
from corral.api import models as models_api
from corral.api import pulls as pulls_api
from corral.api import openai as openai_api
from corral.api import system as system_api
from corral.api.deps import Daemon, get_daemon
from corral.pulls import PullManager
from corral.router import Router
from corral.settings import Settings
from corral.store.db import Store
from corral.supervisor.supervisor import Supervisor

OPEN_PATHS = ("/healthz",)


class ShutdownRequest(BaseModel):
    stop_instances: bool = False


def _allowed_hosts(settings: Settings) -> set[str] | None:
    """Host header values naming this daemon; None = any (bound beyond loopback, key required)."""
    from corral.api.server import is_loopback

    if not is_loopback(settings.host):
        return None
    port = settings.port
    names = {"127.0.0.1", "localhost", "[::1]", settings.host.lower()}
    return {f"{n}:{port}" for n in names} | (names if port == 80 else set())


def create_app(settings: Settings, supervisor_factory=Supervisor) -> FastAPI:
    """Build the daemon app. The supervisor starts (and re-adopts) in the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.ensure_dirs()
        store = Store(settings.db_path)
        supervisor = supervisor_factory(settings, store)
        pulls = PullManager(settings, store)
        router = Router(supervisor)
        daemon = Daemon(settings=settings, store=store, supervisor=supervisor, pulls=pulls,
                        router=router, started_at=time.time())
        app.state.daemon = daemon
        await supervisor.start()
        try:
            yield
        finally:
            await pulls.close()
            await router.close()
            await supervisor.close()
            store.close()

    app = FastAPI(title="corral", version=__version__, lifespan=lifespan,
                  description="Run, supervise and route llama.cpp llama-server instances.")
    errors.install(app)

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

    @app.get("/healthz", tags=["daemon"])
    async def healthz(request: Request) -> dict:
        d: Daemon = request.app.state.daemon
        return {"status": "ok", "version": __version__, "pid": os.getpid(),
                "home": str(d.settings.home), "uptime": time.time() - d.started_at}

    @app.post("/api/v1/shutdown", tags=["daemon"])
    async def shutdown(req: ShutdownRequest, request: Request,
                       d: Daemon = Depends(get_daemon)) -> dict:
        """Stop the daemon; with ``stop_instances`` stop every instance first."""
        stopped = [r.name for r in d.supervisor.list() if r.pid]
        if req.stop_instances:
            await d.supervisor.stop_all()
        server = getattr(request.app.state, "server", None)
        if server is not None:
            server.should_exit = True
        d.shutdown.set()
        return {"stopping": True, "stopped_instances": stopped if req.stop_instances else []}

    app.include_router(instances.router)
    app.include_router(flags.router)
    app.include_router(builds.router)
    app.include_router(pulls_api.router)
    app.include_router(models_api.router)
    app.include_router(system_api.router)
    app.include_router(openai_api.router)
    return app
