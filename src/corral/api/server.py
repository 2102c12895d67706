"""``corral serve``: one daemon per CORRAL_HOME, guarded by a lock file.

Before anything listens, :func:`serve` refuses, with one line and an exit code, what
would make a daemon unsafe or useless: a non-loopback bind without an API key, or with a
``CORRAL_API_KEY`` shorter than :data:`~corral.settings.MIN_API_KEY_LENGTH` characters (on
loopback a short key is accepted with a warning: it only keeps out other local users);
a port in use; a store that cannot be opened (corrupt, read-only, full: StoreError /
DiskFull). The start-up line names the address actually bound (``0.0.0.0`` when that is
what was asked), and the loopback URL local clients use when it differs.

With ``ollama_port`` set (``--ollama-port 11434``) the same server listens on a second
socket, on the same host: one event loop, one app stack, one guard and one lifespan, so
the Ollama API (and ``/v1/*``) answer there under the same rules. Both sockets are bound
before uvicorn starts, so a taken Ollama port is one line at start, not a traceback.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import sys

import uvicorn

from corral import keys
from corral.api.app import create_app, front
from corral.builds.resolve import resolve_binary
from corral.errors import BinaryError, Conflict, UsageError
from corral.net import is_loopback
from corral.settings import MIN_API_KEY_LENGTH, Settings, private_umask
from corral.store.db import Store, translated
from corral.types import check_port

log = logging.getLogger("corral.server")


def acquire_lock(settings: Settings):
    """Hold CORRAL_HOME/daemon.lock for the life of the process (one daemon per home)."""
    settings.ensure_dirs()
    path = settings.home / "daemon.lock"
    with translated(settings.home):
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


def bind_url(host: str, port: int) -> str:
    """``http://HOST:PORT`` for the address the daemon binds (IPv6 in brackets)."""
    shown = f"[{host}]" if ":" in host else (host or "0.0.0.0")
    return f"http://{shown}:{port}"


def check_api_key(settings: Settings) -> None:
    """Refuse a CORRAL_API_KEY too short to guard a non-loopback bind."""
    key = settings.api_key
    if not key or len(key) >= MIN_API_KEY_LENGTH:
        return
    if not is_loopback(settings.host):
        raise UsageError(
            f"refusing to listen on {settings.host}: CORRAL_API_KEY has "
            f"{len(key)} characters, at least {MIN_API_KEY_LENGTH} are needed "
            "(or use `corral keys create NAME`)"
        )
    log.warning(
        "CORRAL_API_KEY has only %d characters (at least %d are needed beyond loopback)",
        len(key),
        MIN_API_KEY_LENGTH,
    )


def check_ollama_port(settings: Settings) -> int:
    """The Ollama port to listen on (0: none); a UsageError for one out of range or equal
    to the daemon's own port."""
    port = settings.ollama_port
    if not port:
        return 0
    check_port(port, "ollama_port")
    if port == settings.port:
        raise UsageError(f"ollama_port {port} is the daemon's own port: choose another one")
    return port


def listen(host: str, port: int, what: str) -> socket.socket:
    """A listening socket on ``host:port``, or a one-line Conflict naming ``what`` it is for."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # "::" takes IPv4 too, as when uvicorn binds it itself (create_server says v6 only)
    dual = host == "::" and socket.has_dualstack_ipv6()
    try:
        return socket.create_server((host, port), family=family, backlog=2048, dualstack_ipv6=dual)
    except OSError as exc:
        raise Conflict(
            f"cannot listen on {bind_url(host, port)} for {what}: {exc.strerror or exc}"
        ) from None


def _ollama_socket(settings: Settings, port: int) -> socket.socket:
    from corral.supervisor.process import ProcessOps

    if not ProcessOps().port_free(settings.host, port):
        raise Conflict(
            f"cannot listen on {settings.host}:{port} for the Ollama API: the port is in use "
            "(is Ollama itself running? stop it, or set another --ollama-port / "
            "CORRAL_OLLAMA_PORT, 0 = off)"
        )
    return listen(settings.host, port, "the Ollama API")


def _sockets(settings: Settings, ollama_port: int) -> list[socket.socket] | None:
    """Both listening sockets when there is an Ollama port, else None (uvicorn binds)."""
    if not ollama_port:
        return None
    ollama_sock = _ollama_socket(settings, ollama_port)
    try:
        main = listen(settings.host, settings.port, "the daemon")
    except BaseException:
        ollama_sock.close()
        raise
    return [main, ollama_sock]


def serve(settings: Settings) -> None:
    """Run the daemon in the foreground until SIGINT/SIGTERM or /api/v1/shutdown."""
    private_umask()  # see corral.settings, "File modes"
    check_api_key(settings)
    if (
        not is_loopback(settings.host)
        and not settings.api_key
        and not keys.keys_exist(settings.db_path)
    ):
        raise UsageError(
            f"refusing to listen on {settings.host} without an API key: "
            "run `corral keys create NAME` (or set CORRAL_API_KEY)"
        )
    ollama_port = check_ollama_port(settings)
    lock = acquire_lock(settings)
    from corral.supervisor.process import ProcessOps

    if not ProcessOps().port_free(settings.host, settings.port):
        lock.close()
        raise Conflict(
            f"cannot listen on {settings.host}:{settings.port}: the port is in use "
            "(set CORRAL_PORT or --port)"
        )
    try:
        sockets = _sockets(settings, ollama_port)
    except BaseException:
        lock.close()
        raise
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per Hub request
    try:
        store = Store(settings.db_path)  # a broken store stops the start here, in one line
    except BaseException:
        lock.close()
        raise
    try:
        resolve_binary(settings, store)
    except BinaryError as exc:
        print(f"corral: {exc}", file=sys.stderr)
    finally:
        store.close()
    app = create_app(settings)
    # proxy_headers off: nothing sits in front of the daemon whose X-Forwarded-* to trust
    config = uvicorn.Config(
        front(app, settings),
        proxy_headers=False,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    app.state.server = server
    bound = bind_url(settings.host, settings.port)
    local = "" if bound == settings.daemon_url else f", local clients use {settings.daemon_url}"
    also = f", the Ollama API on {bind_url(settings.host, ollama_port)}" if ollama_port else ""
    print(
        f"corral: daemon listening on {bound}{also} (home {settings.home}{local})",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.run(sockets=sockets)
    finally:
        for sock in sockets or ():
            sock.close()
        lock.close()
    if not server.started:
        raise Conflict(f"could not listen on {settings.host}:{settings.port} (in use?)")
