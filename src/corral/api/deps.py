"""Shared state of one running daemon, reachable from every route."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import Request

from corral.builds.jobs import BuildJobs
from corral.pulls import PullManager
from corral.router import Router
from corral.settings import Settings
from corral.store.db import Store
from corral.supervisor.supervisor import Supervisor


@dataclass
class Daemon:
    settings: Settings
    store: Store
    supervisor: Supervisor
    pulls: PullManager
    router: Router
    builds: BuildJobs
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = 0.0


async def get_daemon(request: Request) -> Daemon:
    # async: a plain def would be run in the thread pool on every request
    return request.app.state.daemon
