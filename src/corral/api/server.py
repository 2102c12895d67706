"""``corral serve``: one daemon per CORRAL_HOME, guarded by a lock file."""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import sys

import uvicorn

from corral import keys
from corral.api.app import create_app, front
from corral.builds.resolve import resolve_binary
from corral.errors import BinaryError, Conflict, UsageError
from corral.settings import Settings
from corral.store.db import Store


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _keys_exist(settings: Settings) -> bool:
    """Whether the store holds an unrevoked API key (without creating a store to find out)."""
    if not settings.db_path.exists():
        return False
    store = Store(settings.db_path)
    try:
        return keys.active_count(store) > 0
    finally:
        store.close()


def acquire_lock(settings: Settings):
    """Hold CORRAL_HOME/daemon.lock for the life of the process (one daemon per home)."""
    settings.ensure_dirs()
    path = settings.home / "daemon.lock"
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        fh.close()
        raise Conflict(f"a corral daemon (pid {pid}) already runs for {settings.home}")
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def serve(settings: Settings) -> None:
    """Run the daemon in the foreground until SIGINT/SIGTERM or /api/v1/shutdown."""
    if not is_loopback(settings.host) and not settings.api_key and not _keys_exist(settings):
        raise UsageError(f"refusing to listen on {settings.host} without an API key: "
                         "run `corral keys create NAME` (or set CORRAL_API_KEY)")
    lock = acquire_lock(settings)
    from corral.supervisor.process import ProcessOps

    if not ProcessOps().port_free(settings.host, settings.port):
        lock.close()
        raise Conflict(f"cannot listen on {settings.host}:{settings.port}: the port is in use "
                       "(set CORRAL_PORT or --port)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per Hub request
    try:
        store = Store(settings.db_path)
        resolve_binary(settings, store)
        store.close()
    except BinaryError as exc:
        print(f"corral: {exc}", file=sys.stderr)
    app = create_app(settings)
    # proxy_headers off: nothing sits in front of the daemon whose X-Forwarded-* to trust
    config = uvicorn.Config(front(app, settings), proxy_headers=False, host=settings.host,
                            port=settings.port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    app.state.server = server
    print(f"corral: daemon listening on {settings.daemon_url} (home {settings.home})",
          file=sys.stderr, flush=True)
    try:
        server.run()
    finally:
        lock.close()
    if not server.started:
        raise Conflict(f"could not listen on {settings.host}:{settings.port} (in use?)")
