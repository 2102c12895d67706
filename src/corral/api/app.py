"""The FastAPI application of the daemon."""

from __future__ import annotations

import os
import time
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel

from corral import __version__
from corral.api import (
    builds,
    conversations,
    errors,
    events,
    fit as fit_api,
    flags,
    instances,
    keys,
    limits,
    metrics,
    models as models_api,
    nodes as nodes_api,
    ollama as ollama_api,
    openai as openai_api,
    presets as presets_api,
    pulls as pulls_api,
    rpc as rpc_api,
    security,
    settings as settings_api,
    system as system_api,
    web,
)
from corral.api.deps import Daemon, get_daemon
from corral.builds.jobs import BuildJobs
from corral.nodes.fleet import Fleet
from corral.nodes.registry import NodeRegistry
from corral.pulls import PullManager
from corral.router import Router
from corral.settings import Settings
from corral.store.db import Store
from corral.supervisor.rpc import RpcSupervisor
from corral.supervisor.supervisor import Supervisor


class ShutdownRequest(BaseModel):
    stop_instances: bool = False


def front(app: FastAPI, settings: Settings):
    """What the server runs: the guard (keys, Host, Origin, content type) in front of
    everything, then the Ollama layer (its inference paths, translated for the relay,
    and ``/`` on the Ollama port), then the ``/v1/*`` relay, then the FastAPI app.

    The relay sits outside FastAPI's own middleware and routing on purpose: those layers
    cost more per request than the whole relay (see docs/BENCHMARKS.md). One stack serves
    both ports (corral's and ``ollama_port``): one guard, one lifespan.
    """
    return security.Guard(ollama_api.OllamaFront(openai_api.Relay(app), app, settings), settings)


def _lifespan(settings: Settings, supervisor_factory):
    """The daemon's life around the server's: the store, supervisor (which re-adopts the
    running instances), router, pulls and builds come up before the first request and go
    down, in the reverse order, after the last."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.ensure_dirs()
        store = Store(settings.db_path)
        supervisor = supervisor_factory(settings, store)
        pulls = PullManager(settings, store)
        router = Router(supervisor, pulls=pulls)
        router.metrics.attach(supervisor)
        build_jobs = BuildJobs(settings, store)
        daemon = Daemon(
            settings=settings,
            store=store,
            supervisor=supervisor,
            pulls=pulls,
            router=router,
            builds=build_jobs,
            started_at=time.time(),
        )
        app.state.daemon = daemon
        # The linked nodes (corral nodes): polled in the background, never awaited by a
        # local request; on app.state rather than Daemon, read by api/nodes.py only.
        app.state.nodes = NodeRegistry(store, lambda: settings.node_poll_interval)
        app.state.fleet = Fleet(app.state.nodes)  # /v1/* across the nodes (api/openai.py)
        # This machine's rpc-servers (corral rpc): re-adopted here, read by api/rpc.py only.
        app.state.rpc = RpcSupervisor(settings, store)
        await supervisor.start()
        await app.state.rpc.start()
        router.start()
        app.state.nodes.start()
        try:
            yield
        finally:
            await app.state.nodes.close()
            await pulls.close()
            await build_jobs.close()
            await router.close()
            await app.state.rpc.close()
            await supervisor.close()
            store.close()

    return lifespan


daemon_routes = APIRouter(tags=["daemon"])


@daemon_routes.get("/healthz")
async def healthz(request: Request) -> dict:
    d: Daemon = request.app.state.daemon
    return {
        "status": "ok",
        "version": __version__,
        "pid": os.getpid(),
        "home": str(d.settings.home),
        "uptime": time.time() - d.started_at,
    }


@daemon_routes.post("/api/v1/shutdown")
async def shutdown(req: ShutdownRequest, request: Request, d: Daemon = Depends(get_daemon)) -> dict:
    """Stop the daemon; with ``stop_instances`` stop every instance first."""
    stopped = [r.name for r in d.supervisor.list() if r.pid]
    if req.stop_instances:
        await d.supervisor.stop_all()
        await request.app.state.rpc.stop_all()
    server = getattr(request.app.state, "server", None)
    if server is not None:
        server.should_exit = True
    d.shutdown.set()
    return {"stopping": True, "stopped_instances": stopped if req.stop_instances else []}


#: The API's resources, one module each, in the order their routes are matched.
RESOURCES = (
    instances,
    flags,
    builds,
    pulls_api,
    models_api,
    system_api,
    openai_api,
    presets_api,
    keys,
    nodes_api,
    rpc_api,
    conversations,
    events,
    metrics,
    settings_api,
    fit_api,
    ollama_api,
)


def create_app(settings: Settings, supervisor_factory=Supervisor) -> FastAPI:
    """Build the daemon's FastAPI app (serve it wrapped by :func:`front`).

    The supervisor starts (and re-adopts) in the lifespan."""
    # No /docs nor /redoc: FastAPI's pages load swagger-ui/redoc from a CDN into the
    # daemon's origin. /openapi.json stays; see docs in corral.api.web.
    app = FastAPI(
        title="corral",
        version=__version__,
        lifespan=_lifespan(settings, supervisor_factory),
        docs_url=None,
        redoc_url=None,
        description="Run, supervise and route llama.cpp llama-server instances.",
    )
    errors.install(app)
    app.add_middleware(limits.BodyLimit)  # 1 MiB bodies, refused before they are read
    app.include_router(daemon_routes)
    for part in RESOURCES:
        app.include_router(part.router)
    web.install(app)  # last: the UI's static files at /
    return app
