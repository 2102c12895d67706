"""Supervised llama.cpp ``rpc-server`` processes: one model across hosts.

``llama-server --rpc HOST:PORT,...`` offloads layers to the devices that ``rpc-server``
processes expose on other machines. corral runs those servers like its instances, with
the same primitives (:mod:`corral.supervisor.process`: own session, group signals, log
file by ``O_APPEND``, adoption by pid + start time + command line) and the same pure
state machine (:mod:`corral.supervisor.states`), through one small loop per server:

    STARTING --listening--> READY --exit--> BACKOFF (policy) --respawned--> STARTING
    STARTING --exit before it ever listened--> FAILED (a bad -d device, a taken port)
    any --crash limit (crash_limit in crash_window)--> FAILED;  stop --> gone (row removed)

Why not the instance supervisor: an rpc-server has no HTTP ``/health``, no model, no
flag catalog and no memory plan; it is ready when it *listens* (read from the kernel's
socket table with psutil, so the server, which serves one client at a time, is never
sent a probe connection), and the only fault it has is exiting. A hang is not detected.

Security. llama.cpp's RPC protocol has no authentication and no encryption (its README:
"never run the RPC server on an open network"). corral therefore binds it only to an
IPv4 address the user names (default 127.0.0.1), refuses ``0.0.0.0`` without
``insecure``, and the docs say to put it on a private network (WireGuard, Tailscale).
IPv6 is refused: llama.cpp splits an endpoint at its first ``:``.

Cache. Servers run with ``-c`` (unless asked not to) and ``LLAMA_CACHE`` set to
``CORRAL_HOME/rpc-cache``: rpc-server keeps large tensors there by hash, so a model sent
once is not sent over the network again after a restart.

A stopped server is forgotten (its row removed; its log stays in ``logs/rpc/``): a server
has no settings worth keeping, and ``corral rpc start`` makes a new one in a second.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from corral.builds.resolve import binary_env, resolve_binary
from corral.builds.tools import tools_beside
from corral.errors import (
    BinaryError,
    Conflict,
    LaunchFailed,
    NotFound,
    PortInUse,
    StoreError,
    UsageError,
)
from corral.settings import Settings
from corral.store import rpc as table
from corral.store.db import Store
from corral.store.rpc import RpcRecord
from corral.supervisor import logs
from corral.supervisor.process import (
    KILL_WAIT,
    UNKNOWN_EXIT,
    ProcessHandle,
    ProcessOps,
    describe_exit,
    wait_gone,
)
from corral.supervisor.states import (
    ALIVE,
    RESTING,
    Event,
    State,
    backoff_delay,
    recent,
    should_restart,
    transition,
)
from corral.types import DEFAULT_RESTART, check_host, check_name, check_port, check_restart

log = logging.getLogger("corral.rpc")

#: llama.cpp's default RPC port; without ``port`` the first free one from here is taken.
DEFAULT_PORT = 50052
PORT_SPAN = 100
#: How often a server's process is checked for exit and, while starting, for listening.
CHECK_INTERVAL = 0.1
#: Seconds an rpc-server may take to listen (it loads backends and may hash its cache).
LISTEN_TIMEOUT = 60.0
LOG_TAIL_LINES = 20
#: A backend device name as ``rpc-server -d`` takes it (CUDA0, Vulkan1, CPU, ...).
DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")

INSECURE_HINT = (
    "rpc-server has no authentication: anyone who reaches {host}:{port} can run code "
    "on this machine's devices. Bind it to a private address (WireGuard, Tailscale, a "
    "LAN you trust), or pass --insecure if this machine is already on one"
)


def check_bind(host: object, insecure: bool = False) -> str:
    """The IPv4 address an rpc-server may bind: named, not a host name; ``0.0.0.0``
    only with ``insecure``."""
    ip = ipaddress.ip_address(check_host(host, "--host"))
    if ip.version == 6:
        raise UsageError(
            "rpc-server needs an IPv4 address: llama.cpp's RPC endpoint is HOST:PORT, "
            "split at the first ':'"
        )
    if ip.is_unspecified and not insecure:
        raise UsageError(
            "refusing to bind rpc-server to 0.0.0.0 (every network of this machine)",
            detail=INSECURE_HINT.format(host="0.0.0.0", port="PORT"),
        )
    return str(ip)


def check_devices(devices: object) -> list[str]:
    """``-d`` device names: a list, or one comma-separated string."""
    if devices is None:
        return []
    if isinstance(devices, str):
        devices = [d for d in devices.split(",") if d]
    if not isinstance(devices, list):
        raise UsageError("--device takes device names, e.g. CUDA0,CUDA1")
    for d in devices:
        if not isinstance(d, str) or not DEVICE_RE.match(d):
            raise UsageError(f"not a device name: {str(d)[:80]!r} (e.g. CUDA0, Vulkan1, CPU)")
    return list(devices)


def rpc_argv(binary: str, rec: RpcRecord) -> list[str]:
    """The command line of a server: ``rpc-server -H HOST -p PORT [-d ..] [-t N] [-c]``."""
    argv = [binary, "-H", rec.host, "-p", str(rec.port)]
    if rec.devices:
        argv += ["-d", ",".join(rec.devices)]
    if rec.threads:
        argv += ["-t", str(rec.threads)]
    if rec.cache:
        argv.append("-c")
    return argv


def find_rpc_binary(
    settings: Settings, store: Store | None, binary: str | None = None, build: int | None = None
) -> str:
    """The rpc-server to run: ``binary`` as given, else the one beside the llama-server
    that an instance would run (``build``, CORRAL_LLAMA_SERVER, the default build, PATH)."""
    if binary:
        try:
            path = Path(binary).expanduser()
            usable = path.is_file() and os.access(path, os.X_OK)
        except (OSError, ValueError, RuntimeError):  # a NUL byte, a name too long, ~nobody
            usable = False
        if not usable:
            raise BinaryError(f"{str(binary)[:200]!r} is not an executable rpc-server")
        return str(path.resolve())
    llama = resolve_binary(settings, store, None, build)
    found = tools_beside(llama.path).get("rpc-server")
    if found is None:
        raise BinaryError(
            f"no rpc-server beside {llama.path}: corral update builds it (llama.cpp's "
            "GGML_RPC), or pass --binary PATH"
        )
    return found


def listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` has a TCP socket listening on ``port`` (kernel tables:
    no connection is made to the server)."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)


@dataclass
class _Server:
    """What the daemon holds for one server: its record and its process."""

    rec: RpcRecord
    handle: ProcessHandle | None = None
    task: asyncio.Task | None = None
    crashes: list[float] = field(default_factory=list)
    ever_ready: bool = False
    epoch: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class _Stale(Exception):
    """A supervision task outlived its epoch (a stop began): it may act no more."""


class RpcSupervisor:
    """Launches, watches, restarts, re-adopts and stops this machine's rpc-servers.

    ``ops`` (spawn/adopt/port checks), ``is_listening`` and ``clock`` are the seams."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        ops: ProcessOps | None = None,
        is_listening: Callable[[int, int], bool] = listening,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.store = settings, store
        self.ops = ops or ProcessOps()
        self.is_listening = is_listening
        self.clock = clock
        self._servers: dict[str, _Server] = {}
        self._launch_lock = asyncio.Lock()

    # ------------------------------------------------------------------ reading

    @property
    def cache_dir(self) -> Path:
        return self.settings.home / "rpc-cache"

    def log_path(self, name: str) -> Path:
        return self.settings.logs_dir / "rpc" / f"{name}.log"

    def list(self) -> list[RpcRecord]:
        return [self._servers[n].rec for n in sorted(self._servers)]

    def get(self, name: str) -> RpcRecord:
        srv = self._servers.get(name)
        if srv is None:
            raise NotFound(f"no rpc-server named {name!r} (corral rpc ls)")
        return srv.rec

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        """Re-adopt the servers a previous daemon left running; restart the vanished."""
        for rec in table.list_all(self.store):
            srv = _Server(rec)
            self._servers[rec.name] = srv
            state = State(rec.state)
            if state in RESTING:
                continue
            handle = self.ops.adopt(rec.pid, rec.create_time, rec.argv) if rec.pid else None
            if state is State.STOPPING:  # a stop the old daemon did not finish
                srv.handle = handle
                self._run(srv, self._finish_stop)
                continue
            if handle is not None:
                srv.handle = handle
                srv.ever_ready = rec.ready_at is not None
                self._apply(srv, Event.ADOPT)
                log.info("rpc-server %s: adopted pid %s", rec.name, handle.pid)
            else:
                restart = should_restart(rec.restart_policy, UNKNOWN_EXIT)
                srv.ever_ready = True  # it ran before: a restart, not a first load
                self._apply(
                    srv,
                    Event.VANISHED,
                    restart=restart,
                    pid=None,
                    exit_code=UNKNOWN_EXIT,
                    last_error="gone while no daemon watched",
                )
            self._run(srv, self._supervise)

    async def close(self) -> None:
        """Stop watching (the servers keep running for the next daemon)."""
        tasks = [s.task for s in self._servers.values() if s.task and not s.task.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    async def launch(
        self,
        *,
        name: str | None = None,
        host: str | None = None,
        port: int | None = None,
        devices: object = None,
        threads: int | None = None,
        cache: bool = True,
        insecure: bool = False,
        binary: str | None = None,
        build: int | None = None,
        restart: str | None = None,
        wait: bool = True,
    ) -> RpcRecord:
        """Start an rpc-server; with ``wait``, return once it listens (LaunchFailed with
        its log's tail when it exits first)."""
        host = check_bind(host or "127.0.0.1", insecure)
        rec = RpcRecord(
            name="",
            binary="",
            host=host,
            port=0,
            devices=check_devices(devices),
            threads=_check_threads(threads),
            cache=1 if cache else 0,
            restart_policy=check_restart(restart or DEFAULT_RESTART),
        )
        rec.binary = await asyncio.to_thread(
            find_rpc_binary, self.settings, self.store, binary, build
        )
        async with self._launch_lock:
            rec.port = self._choose_port(host, port)
            rec.name = self._choose_name(name, rec.port)
            rec.argv = rpc_argv(rec.binary, rec)
            table.insert(self.store, rec)
            srv = _Server(rec)
            self._servers[rec.name] = srv
            if self._spawn(srv, Event.START):
                self._run(srv, self._supervise)
        if not wait:
            return rec
        try:
            return await self.wait_ready(rec.name)
        except LaunchFailed as exc:  # nothing to keep: the answer carries the why
            await self.remove(rec.name)
            raise exc

    async def wait_ready(self, name: str, timeout: float = LISTEN_TIMEOUT + 5) -> RpcRecord:
        """The record once it listens; LaunchFailed when it ends at rest instead."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rec = self.get(name)
            if rec.state == State.READY:
                return rec
            if rec.state in RESTING:
                first, _, rest = (rec.last_error or rec.state).partition("\n")
                raise LaunchFailed(f"rpc-server {name} did not start: {first}", detail=rest or None)
            await asyncio.sleep(0.05)
        raise LaunchFailed(f"rpc-server {name} is not listening after {timeout:g} s")

    async def remove(self, name: str) -> None:
        """Stop the server (SIGTERM its group, SIGKILL after stop_timeout) and forget it.

        Runs to the end in its own task: a client hanging up does not leave it half done."""
        srv = self._servers.get(name)
        if srv is None:
            raise NotFound(f"no rpc-server named {name!r} (corral rpc ls)")
        await asyncio.shield(asyncio.ensure_future(self._remove(srv)))

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.remove(n) for n in list(self._servers)))

    # ------------------------------------------------------------------ choices

    def _choose_port(self, host: str, wanted: int | None) -> int:
        taken = {s.rec.port for s in self._servers.values()}
        if wanted is not None:
            port = check_port(wanted, "--port")
            if port in taken or not self.ops.port_free(host, port):
                raise PortInUse(f"port {port} on {host} is taken")
            return port
        for port in range(DEFAULT_PORT, DEFAULT_PORT + PORT_SPAN):
            if port not in taken and self.ops.port_free(host, port):
                return port
        raise PortInUse(f"no free port in {DEFAULT_PORT}-{DEFAULT_PORT + PORT_SPAN - 1} on {host}")

    def _choose_name(self, wanted: str | None, port: int) -> str:
        name = check_name(wanted, "name") if wanted else f"rpc-{port}"
        if name in self._servers:
            raise Conflict(f"an rpc-server named {name!r} exists already (corral rpc ls)")
        return name

    # ------------------------------------------------------------------ supervision

    def _run(self, srv: _Server, body) -> None:
        epoch = srv.epoch

        async def under_epoch():
            try:
                await body(srv, epoch)
            except _Stale:
                pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug: never leave a server unwatched and running
                log.exception("rpc-server %s: supervision failed", srv.rec.name)
                await self._kill(srv)
                if srv.epoch == epoch and State(srv.rec.state) not in RESTING:
                    self._apply(srv, Event.FAULT, pid=None, last_error=f"supervisor fault: {exc}")

        srv.task = asyncio.get_running_loop().create_task(under_epoch())

    async def _supervise(self, srv: _Server, epoch: int) -> None:
        while True:
            self._check(srv, epoch)
            state = State(srv.rec.state)
            if state is State.STARTING:
                await self._await_listening(srv, epoch)
            elif state is State.READY:
                await self._watch(srv, epoch)
            elif state is State.BACKOFF:
                await self._respawn(srv, epoch)
            else:
                return

    async def _await_listening(self, srv: _Server, epoch: int) -> None:
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while True:
            if self._exited(srv, epoch):
                return
            if await asyncio.to_thread(self.is_listening, srv.handle.pid, srv.rec.port):
                self._check(srv, epoch)
                srv.ever_ready = True
                self._apply(srv, Event.HEALTH_OK, ready_at=self.clock())
                return
            if time.monotonic() > deadline:
                await self._kill(srv)
                self._check(srv, epoch)
                self._apply(
                    srv,
                    Event.LOAD_TIMEOUT,
                    pid=None,
                    last_error=f"not listening on {srv.rec.endpoint} after {LISTEN_TIMEOUT:g} s",
                )
                return
            await asyncio.sleep(CHECK_INTERVAL)

    async def _watch(self, srv: _Server, epoch: int) -> None:
        while True:
            if self._exited(srv, epoch):
                return
            await asyncio.sleep(CHECK_INTERVAL * 2)

    def _exited(self, srv: _Server, epoch: int) -> bool:
        """Whether the process has ended; then EXIT is applied (:meth:`_after_exit`)."""
        code = srv.handle.poll() if srv.handle else UNKNOWN_EXIT
        self._check(srv, epoch)
        if code is None:
            return False
        self._after_exit(srv, code)
        return True

    def _after_exit(self, srv: _Server, code: int) -> None:
        """EXIT: backoff by the restart policy, or FAILED (first start, crash loop)."""
        now = self.clock()
        s = self.settings
        srv.crashes = recent([*srv.crashes, now], now, s.crash_window)
        restart = should_restart(srv.rec.restart_policy, code)
        looping = restart and len(srv.crashes) >= s.crash_limit
        first = not srv.ever_ready
        why = describe_exit(code)
        if first:
            tail = "\n".join(logs.tail(self.log_path(srv.rec.name), LOG_TAIL_LINES))
            why = f"{why} before it listened on {srv.rec.endpoint}:\n{tail}"
        elif looping:
            why = f"crashed {len(srv.crashes)} times in {s.crash_window:g} s; last {why}"
        srv.handle = None
        self._apply(
            srv,
            Event.EXIT,
            restart=restart,
            give_up=first or looping,
            pid=None,
            exit_code=code,
            last_error=why,
        )

    async def _respawn(self, srv: _Server, epoch: int) -> None:
        s = self.settings
        await asyncio.sleep(backoff_delay(len(srv.crashes), s.backoff_initial, s.backoff_max))
        self._check(srv, epoch)
        self._spawn(srv, Event.BACKOFF_DONE, restarts=srv.rec.restarts + 1)

    def _spawn(self, srv: _Server, event: Event, **changes) -> bool:
        """Start the process (START or BACKOFF_DONE); SPAWN_FAILED when it cannot be."""
        rec = srv.rec
        try:
            if not self.ops.port_free(rec.host, rec.port):
                raise PortInUse(f"port {rec.port} on {rec.host} is taken by another process")
            self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            env = binary_env(Path(rec.binary))
            env["LLAMA_CACHE"] = str(self.cache_dir)
            handle = self.ops.spawn(rec.argv, env, self.log_path(rec.name))
        except (OSError, UsageError, PortInUse) as exc:
            self._apply(srv, Event.SPAWN_FAILED, pid=None, last_error=f"cannot start: {exc}")
            return False
        srv.handle = handle
        self._apply(
            srv,
            event,
            pid=handle.pid,
            create_time=handle.create_time,
            started_at=self.clock(),
            ready_at=None,
            **changes,
        )
        return True

    # ------------------------------------------------------------------ stopping

    async def _remove(self, srv: _Server) -> None:
        async with srv.lock:
            srv.epoch += 1  # the supervision task may act no more
            task = srv.task
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=2.0)
            if State(srv.rec.state) in ALIVE or State(srv.rec.state) is State.BACKOFF:
                self._apply(srv, Event.STOP)
            await self._finish_stop(srv, srv.epoch)

    async def _finish_stop(self, srv: _Server, epoch: int) -> None:
        await self._kill(srv)
        if State(srv.rec.state) is State.STOPPING:
            self._apply(srv, Event.GONE, pid=None)
        try:
            table.delete(self.store, srv.rec.name)
        except StoreError as exc:
            log.warning("rpc-server %s stopped but not forgotten: %s", srv.rec.name, exc)
        self._servers.pop(srv.rec.name, None)

    async def _kill(self, srv: _Server) -> None:
        """SIGTERM the group, wait stop_timeout, SIGKILL what is left (bounded)."""
        handle, srv.handle = srv.handle, None
        if handle is None:
            return
        handle.signal_group(signal.SIGTERM)
        if not await wait_gone(handle, self.settings.stop_timeout):
            log.warning("rpc-server %s ignored SIGTERM: SIGKILL", srv.rec.name)
            handle.signal_group(signal.SIGKILL)
            await wait_gone(handle, KILL_WAIT)

    # ------------------------------------------------------------------ state

    @staticmethod
    def _check(srv: _Server, epoch: int) -> None:
        if srv.epoch != epoch:
            raise _Stale()

    def _apply(
        self, srv: _Server, event: Event, *, restart: bool = False, give_up: bool = False, **changes
    ) -> None:
        """The one writer of a server's state: the pure transition, then the store."""
        new = transition(State(srv.rec.state), event, restart=restart, give_up=give_up)
        changes["state"] = new.value
        for key, value in changes.items():
            setattr(srv.rec, key, value)
        try:
            table.update(self.store, srv.rec.name, **changes)
        except StoreError as exc:  # memory first: supervision goes on
            log.warning("rpc-server %s: state %s not stored: %s", srv.rec.name, new, exc)
        if new in (State.FAILED, State.BACKOFF, State.EXITED):
            log.warning("rpc-server %s: %s (%s)", srv.rec.name, new, srv.rec.last_error)


def _check_threads(threads: object) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 4096:
        raise UsageError(f"--threads must be a whole number from 1 to 4096, got {threads!r}")
    return threads
