"""The asyncio supervisor: launches instances, watches them, restarts them, re-adopts them.

One task per live instance runs :meth:`Supervisor._supervise`, a loop over the states of
:mod:`corral.supervisor.states`. Every change is written to the store first, so a daemon
killed at any moment finds each instance's pid, start time, port and command line when
it comes back, and :meth:`Supervisor.adopt_running` picks them up instead of launching
duplicates.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from corral.builds.catalog import FlagCatalog, load_catalog
from corral.builds.resolve import ResolvedBinary, binary_env, resolve_binary
from corral.errors import (
    BinaryError,
    Conflict,
    InvalidModelFile,
    LaunchFailed,
    NoRoom,
    NotFound,
    OwnedFlag,
    PortInUse,
    StoreError,
    UsageError,
)
from corral.events import Broadcaster
from corral.fit import placement as fit_placement
from corral.launchspec import LaunchSpec, check_env, check_model_file
from corral.settings import Settings
from corral.store import instances as table
from corral.store.db import Store
from corral.store.instances import InstanceRecord
from corral.supervisor import logs
from corral.supervisor.probe import http_health
from corral.supervisor.process import (
    KILL_WAIT,
    UNKNOWN_EXIT,
    ProcessHandle,
    ProcessOps,
    describe_exit,
    wait_gone,
)
from corral.supervisor.states import (
    ACTIVE,
    RESTING,
    Event,
    State,
    backoff_delay,
    recent,
    should_restart,
    transition,
)
from corral.types import (
    check_host,
    check_name,
    check_port,
    check_restart,
    name_from,
    unique_name,
)

log = logging.getLogger("corral.supervisor")

Probe = Callable[[str, int, float], Awaitable[int | None]]

LOG_TAIL_LINES = 20
#: How often a ready instance's process is checked for exit (cheap: waitpid/psutil).
EXIT_CHECK_INTERVAL = 0.2
#: Seconds a probe may overrun its own timeout before it counts as no answer.
PROBE_GRACE = 1.0
#: Seconds a cancelled supervision task gets to end before it is abandoned.
TASK_CANCEL_GRACE = 2.0
#: How far llama-server's own figure may be from the plan before it is a warning.
MISMATCH = 0.15
#: Flags by which the user places a launch themselves: then it is not planned. ``--rpc``
#: is not one: its servers' devices are asked their memory and planned for too
#: (:mod:`corral.fit.rpc_devices`); a server that cannot be asked leaves it unplanned.
_PLACEMENT_FLAGS = ("--n-gpu-layers", "--tensor-split", "--device")
#: Seconds between retries of state writes the store refused (disk full).
STORE_RETRY_INTERVAL = 1.0


@dataclass
class Runtime:
    """In-memory companion of one instance record."""

    rec: InstanceRecord
    handle: ProcessHandle | None = None
    task: asyncio.Task | None = None
    crash_times: list[float] = field(default_factory=list)
    ever_ready: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    epoch: int = 0  # bumped when a stop retires the supervision task (see Supervisor)
    unsaved: dict = field(default_factory=dict)  # columns the store refused, retried

    @property
    def state(self) -> State:
        return State(self.rec.state)


@dataclass
class _Placed:
    """What one launch runs, decided by :meth:`Supervisor._place` (for ``plan`` too)."""

    name: str
    port: int
    host: str
    model: Path
    resolved: ResolvedBinary
    catalog: FlagCatalog
    pairs: list
    env: dict
    placement: dict | None
    argv: list[str]


def _check_rpc_free(live: list, catalog: FlagCatalog, pairs: list) -> None:
    """TimeoutError when a live instance uses one of the launch's rpc-servers: it serves
    one client at a time, so it would not answer (asking it would only wait)."""
    from corral.fit.rpc_devices import endpoints_in

    wanted = set(endpoints_in(pairs, catalog))
    if not wanted:
        return
    for rec in live:
        if rec.desired != "running" or rec.state not in fit_placement.HOLDING:
            continue
        shared = wanted & set(endpoints_in(rec.flags or [], catalog))
        if shared:
            raise TimeoutError(
                f"rpc-server {sorted(shared)[0]} is in use by instance {rec.name} "
                "(it serves one client at a time)"
            )


def derive_name(model: Path, taken: set[str]) -> str:
    """A short instance name from the model file name (lower case, at most 48
    characters), unique among ``taken``."""
    base = name_from(model.name.removesuffix(".gguf").lower(), "instance", max_length=48)
    return unique_name(base, taken)


class Supervisor:
    """Owns every llama-server process of one CORRAL_HOME.

    Three rules keep a stop from ever hanging (issue 10, "a stop can hang forever"):

    - **One writer of state.** Loops and commands produce :class:`Event` values;
      :meth:`_apply` runs :func:`transition` and persists the result. An impossible
      event raises :class:`InvalidTransition`; nothing else assigns ``rec.state``.
    - **Stale tasks cannot act.** Every supervision task runs under an *epoch* (a
      context variable). A stop bumps the instance's epoch before it cancels the task,
      so even a task that swallowed its cancellation can no longer write a state, spawn
      or signal a process: it is abandoned, logged, and the stop goes on.
    - **Every await under a lock is bounded.** Probes run as separate tasks the loops
      wait on with a timeout (a probe that ignores cancellation cannot hold a loop);
      cancelling the supervision task waits at most ``TASK_CANCEL_GRACE``; terminating
      waits ``stop_timeout`` then SIGKILLs and waits ``KILL_WAIT``. A stop therefore ends
      within ``stop_timeout + TASK_CANCEL_GRACE + KILL_WAIT`` whatever the task does,
      and it runs in its own task, so a client that hangs up mid-stop does not leave the
      instance half stopped.

    The store is written after memory: when a write fails (disk full, store gone) the
    in-memory record stays the truth, supervision goes on, and the write is retried
    (``_flush_unsaved``) until it lands.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        ops: ProcessOps | None = None,
        probe: Probe = http_health,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ops = ops or ProcessOps()
        self.probe = probe
        self.clock = clock
        self._rts: dict[str, Runtime] = {}
        self._launch_lock = asyncio.Lock()
        self._catalogs: dict[str, FlagCatalog] = {}
        self.events = Broadcaster()
        self.generation = 0  # bumped when an instance is added or removed (router's cache)
        self._flusher: asyncio.Task | None = None
        self._store_warned = False
        self.abandoned: list[str] = []  # instances whose task ignored its cancellation (a bug)
        if hasattr(store, "on_recreated"):
            store.on_recreated.append(self._reregister)

    # -- queries ---------------------------------------------------------------
    def list(self) -> list[InstanceRecord]:
        return [
            rt.rec
            for rt in sorted(self._rts.values(), key=lambda r: (r.rec.created_at, r.rec.name))
        ]

    def get(self, name: str) -> InstanceRecord:
        """The record of the instance named ``name`` (or listening on that port), else
        NotFound."""
        return self._rt(name).rec

    def find(self, name: str) -> InstanceRecord | None:
        """The record of the instance named ``name``, or None: one dict lookup, no port
        fallback and no exception (the router's hot path asks this per request)."""
        rt = self._rts.get(name)
        return None if rt is None else rt.rec

    def _rt(self, name_or_port: str) -> Runtime:
        rt = self._rts.get(name_or_port)
        if rt is None and str(name_or_port).isdigit():
            rt = next((r for r in self._rts.values() if r.rec.port == int(name_or_port)), None)
        if rt is None:
            raise NotFound(f"no instance named {name_or_port!r}")
        return rt

    def taken_names(self) -> set[str]:
        """Every instance name in use: supervised here or recorded in the store."""
        return set(self._rts) | {r.name for r in table.list_all(self.store)}

    def log_path(self, name: str) -> Path:
        return self.settings.logs_dir / f"{name}.log"

    async def catalog(self, binary: str | None = None, build_id: int | None = None) -> FlagCatalog:
        """The flag catalog of the binary that would be used (cached per build file)."""
        resolved = resolve_binary(self.settings, self.store, binary, build_id)
        st = resolved.path.stat()
        key = f"{resolved.path}:{st.st_size}:{st.st_mtime_ns}"  # a replaced binary re-parses
        if key not in self._catalogs:
            self._catalogs[key] = await asyncio.to_thread(
                load_catalog, resolved.path, self.settings.cache_dir
            )
        return self._catalogs[key]

    def subscribe(self) -> asyncio.Queue:
        """A queue receiving every event as a dict (for SSE)."""
        return self.events.subscribe()

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self.events.unsubscribe(q)

    # -- lifecycle of the supervisor --------------------------------------------
    async def start(self) -> None:
        """Load every persisted instance and re-adopt the ones still running."""
        await self.adopt_running()
        self._flusher = asyncio.create_task(self._flush_loop(), name="supervisor-flush")

    async def close(self) -> None:
        """Stop supervising. Instances keep running; a later daemon re-adopts them."""
        tasks = [rt.task for rt in self._rts.values() if rt.task and not rt.task.done()]
        if self._flusher is not None:
            tasks.append(self._flusher)
        for rt in self._rts.values():
            rt.epoch += 1  # whatever a task still does after this, it may not act
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=TASK_CANCEL_GRACE)
            for task in pending:
                log.error("task %s did not end after its cancellation; abandoned", task.get_name())
        self._flush_unsaved()

    async def adopt_running(self) -> None:
        """Re-attach to instances a previous daemon started; restart vanished ones."""
        for rec in table.list_all(self.store):
            rt = Runtime(rec)
            self._rts[rec.name] = rt
            rt.ever_ready = rec.ready_at is not None
            handle = self.ops.adopt(rec.pid, rec.create_time, rec.argv) if rec.pid else None
            if rec.desired != "running":
                # The old daemon died mid-stop (or before writing STOPPED): finish the stop.
                rt.handle = handle
                await self._stop_process(rt)
                continue
            if handle is not None:
                rt.handle = handle
                self._apply(rt, Event.ADOPT)
                log.info("adopted %s (pid %s, port %s)", rec.name, rec.pid, rec.port)
                self._emit(rt, "adopted")
                self._run_task(rt, self._supervise)
            elif rt.state in ACTIVE:
                # Gone while no daemon watched it: its restart policy decides, as for a
                # crash we saw (the exit status is unknowable: it counts as a failure).
                restart = should_restart(rec.restart_policy, UNKNOWN_EXIT)
                self._apply(
                    rt,
                    Event.VANISHED,
                    restart=restart,
                    pid=None,
                    create_time=None,
                    exit_code=None,
                    last_error="process vanished while the daemon was down"
                    + ("" if restart else f"; restart policy {rec.restart_policy!r}"),
                )
                if restart:
                    self._run_task(rt, self._resume_vanished)

    # -- commands ----------------------------------------------------------------
    async def _prepare(self, spec: LaunchSpec):
        """Everything a launch decides before choosing a name and port; raises on bad input."""
        check_restart(spec.restart, "restart policy")
        env = check_env(spec.env)
        if spec.idle_ttl is not None and not spec.idle_ttl >= 0:
            raise UsageError("idle_ttl must be a number of seconds >= 0 (0 = never)")
        model, mmproj = self.resolve_model(spec.model)
        resolved = resolve_binary(self.settings, self.store, spec.binary, spec.build_id)
        catalog = await self.catalog(str(resolved.path))
        pairs = catalog.normalize(list(spec.flags))
        _refuse_nul(pairs)
        host, pairs = self._split_owned(catalog, pairs)
        mm_flag = catalog.lookup("--mmproj")
        chosen = {f for f, _ in pairs}  # the user's own --mmproj / --no-mmproj wins
        if (
            mmproj
            and mm_flag is not None
            and mm_flag.long not in chosen
            and not any(f.startswith("--no-mmproj") for f in chosen)
        ):
            pairs.append((mm_flag.long, mmproj))  # the vision projector pulled with the model
        return model, resolved, catalog, host, pairs, env

    async def plan(self, spec: LaunchSpec) -> dict:
        """What :meth:`launch` would run for ``spec`` (name, port, argv), without running it.

        Same checks as a launch; the name and port are the ones free right now.
        """
        d = await self._place(spec, await self._prepare(spec))
        return {
            "name": d.name,
            "port": d.port,
            "host": d.host,
            "model": str(d.model),
            "argv": d.argv,
            "env": d.env,
            "restart": spec.restart,
            "preset": spec.preset,
            "pinned": bool(spec.pinned),
            "idle_ttl": spec.idle_ttl,
            "aliases": list(spec.aliases),
            "build": d.resolved.build_id,
            "version": d.catalog.version,
            "placement": d.placement,
        }

    async def _place(self, spec: LaunchSpec, prepared: tuple) -> _Placed:
        """What a launch of ``spec`` runs, given :meth:`_prepare`'s answer: the memory
        plan's flags and env added (unless the flags place it themselves), the name and
        the port chosen, the command line. Run under the launch lock for a launch."""
        model, resolved, catalog, host, pairs, env = prepared
        fitted = await self._fit(spec, model, catalog, pairs)
        placement = None
        if fitted is not None:
            placement = fit_placement.record(fitted)
            pairs, env = pairs + list(fitted.added), {**fitted.env, **env}
            pairs = self._with_memory_report(catalog, pairs)
        name = self._choose_name(spec.name, model)
        port = self._choose_port(spec.port, host)
        argv = [str(resolved.path), "--model", str(model), "--host", host, "--port", str(port)]
        argv += _alias_argv(catalog, pairs, env, name)
        argv += catalog.to_argv(pairs)
        return _Placed(name, port, host, model, resolved, catalog, pairs, env, placement, argv)

    async def plan_fit(
        self,
        spec: LaunchSpec,
        *,
        devices: str | None = None,
        margin: int | None = None,
        always: bool = False,
    ):
        """The memory plan a launch of ``spec`` would get now (``fit.planner.Plan``),
        counting what the other instances hold; None when it would not be planned
        (``fit`` off, -ngl/-ts/--device given, a model that cannot be estimated) unless
        ``always`` (``POST /api/v1/fit``: a plan around the user's own flags). Never
        raises NoRoom: ``plan.fits`` says it. ``devices``/``margin`` override settings."""
        model, _, catalog, _, pairs, _ = await self._prepare(spec)
        return await self._fit(
            spec, model, catalog, pairs, refuse=False, always=always, devices=devices, margin=margin
        )

    def committed(self, devices, shown=None, exclude: str | None = None) -> dict[str, int]:
        """Bytes per device that live instances hold beyond what the devices' free
        figures show (see :func:`corral.fit.placement.committed`)."""
        return fit_placement.committed(
            (rt.rec for rt in self._rts.values() if rt.rec.name != exclude), devices, shown
        )

    async def _fit(
        self,
        spec: LaunchSpec,
        model: Path,
        catalog: FlagCatalog,
        pairs: list,
        *,
        refuse: bool = True,
        always: bool = False,
        devices: str | None = None,
        margin: int | None = None,
    ):
        """Plan the launch's memory; None when not planned. NoRoom when it cannot fit."""
        if not always:
            if not (spec.fit and self.settings.fit):
                return None
            fixed = {f.long for f in (catalog.lookup(n) for n in _PLACEMENT_FLAGS) if f is not None}
            if any(flag in fixed for flag, _ in pairs):
                return None  # the user placed it: launch exactly that
            if "LLAMA_ARG_RPC" in (spec.env or {}):
                return None  # rpc-servers the flags do not name: their devices are unknown
        from corral.fit import devices as fit_devices, estimate, planner, rpc_devices

        spec_text = (devices or self.settings.fit_devices).strip() or None
        margin = self.settings.fit_margin_mib * 1024 * 1024 if margin is None else margin
        live = [rt.rec for rt in self._rts.values()]  # read on the loop, used in the thread
        rpc_failed: list[OSError] = []

        def work():
            shape = estimate.load_model(str(model))
            if shape.n_layer <= 0 or not shape.layers:
                raise ValueError("the GGUF describes no layers")
            devs = fit_devices.detect_devices(spec_text)
            try:
                _check_rpc_free(live, catalog, pairs)
                rpc_devices.add_rpc(devs, pairs, catalog)  # asked now, before llama-server
            except OSError as exc:
                rpc_failed.append(exc)
                return None
            shown = fit_devices.process_bytes(devs) if spec_text is None else {}
            committed = fit_placement.committed(live, devs, shown)
            found = planner.plan(
                shape, pairs, devs, catalog=catalog, margin=margin, committed=committed
            )
            found.notes.extend(w for w in devs.warnings if w not in found.notes)
            return found

        try:
            plan = await asyncio.to_thread(work)
        except InvalidModelFile as exc:  # llama-server judges its own file format
            log.info("no memory plan for %s: %s", model.name, exc)
            return None
        except UsageError:
            raise  # the flags themselves are wrong (a quantized V cache without -fa ...)
        except Exception as exc:  # noqa: BLE001 - a model it cannot read: launch as typed
            log.info("no memory plan for %s: %s", model.name, exc)
            return None
        if rpc_failed:  # an rpc-server that cannot be asked: as before, llama.cpp splits
            if always:
                raise planner.rpc_unreachable(rpc_failed[0])
            log.warning(
                "%s launched without a memory plan: %s (llama.cpp splits the layers by the "
                "free memory each device reports)",
                model.name,
                rpc_failed[0] or type(rpc_failed[0]).__name__,
            )
            return None
        if refuse and not plan.fits:
            raise NoRoom(
                f"{model.name} does not fit: {plan.notes[0] if plan.notes else ''}"
                " (corral fit shows the plan; --no-fit launches it anyway)",
                short_bytes=plan.short_bytes,
            )
        return plan

    async def launch(self, spec: LaunchSpec) -> InstanceRecord:
        """Validate ``spec`` completely, then spawn it. Nothing is spawned on bad input,
        and a launch that fails to spawn leaves no record behind."""
        prepared = await self._prepare(spec)
        async with self._launch_lock:  # plan and launch in one step: no double-counted bytes
            d = await self._place(spec, prepared)
            name = d.name
            rec = InstanceRecord(
                name=name,
                model=str(d.model),
                binary=str(d.resolved.path),
                port=d.port,
                host=d.host,
                flags=[list(p) for p in d.pairs],
                argv=d.argv,
                build_id=d.resolved.build_id,
                version=d.catalog.version,
                restart_policy=spec.restart,
                desired="running",
                state=State.STOPPED,
                env=d.env,
                preset=spec.preset,
                origin=spec.origin,
                pinned=int(bool(spec.pinned)),
                idle_ttl=spec.idle_ttl,
                aliases=list(spec.aliases),
                placement=d.placement,
            )
            table.insert(self.store, rec)  # a full disk refuses the launch here (507)
            rt = Runtime(rec)
            self._rts[name] = rt
            self.generation += 1
            try:
                self._spawn(rt, Event.START)
            except BaseException:
                self._rts.pop(name, None)
                try:
                    table.delete(self.store, name)
                except StoreError as exc:
                    log.warning("could not remove the record of failed launch %s: %s", name, exc)
                raise
            self._run_task(rt, self._supervise)
        return rec

    async def wait_ready(self, name: str, timeout: float | None = None) -> InstanceRecord:
        """Block until the instance is ready; LaunchFailed (with log tail) if it gives up."""
        rt = self._rt(name)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = rt.state
            if state is State.READY:
                return rt.rec
            if state in RESTING:
                raise LaunchFailed(
                    f"instance {name!r} {state.value}: {rt.rec.last_error or 'no reason recorded'}",
                    detail="\n".join(logs.tail(self.log_path(name), LOG_TAIL_LINES)),
                )
            event = rt.changed
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise LaunchFailed(
                    f"instance {name!r} is still {state.value} after {timeout:g} s; it keeps "
                    f"loading in the background (corral stop {name} to cancel)"
                )
            # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancellation that
            # arrives as the inner wait completes (the bug class of issue 10).
            try:
                async with asyncio.timeout(remaining):
                    await event.wait()
            except TimeoutError:
                continue

    async def stop(self, name: str) -> InstanceRecord:
        """SIGTERM the instance's group, SIGKILL after stop_timeout; it stays stopped.

        Runs to the end in its own task even if the caller is cancelled (a client that
        hangs up must not leave a half-stopped instance holding its lock).
        """
        rt = self._rt(name)

        async def stop_it() -> InstanceRecord:
            async with rt.lock:
                self._check_current(rt)
                await self._stop_locked(rt)
            return rt.rec

        return await _run_to_end(stop_it(), f"stop-{rt.rec.name}")

    def _check_current(self, rt: Runtime) -> None:
        """After waiting for ``rt.lock``: the instance may have been removed meanwhile."""
        if self._rts.get(rt.rec.name) is not rt:
            raise NotFound(f"no instance named {rt.rec.name!r}")

    async def _stop_locked(self, rt: Runtime) -> None:
        """Stop with ``rt.lock`` held: desired state first, so a daemon crash finishes it."""
        self._persist(rt, {"desired": "stopped"})
        await self._cancel_task(rt)
        await self._stop_process(rt)

    async def _stop_process(self, rt: Runtime) -> None:
        """STOP, terminate what runs, GONE: the state ends STOPPED (or stays at rest)."""
        if self._apply(rt, Event.STOP) is State.STOPPING:
            await self._terminate(rt)
            self._apply(rt, Event.GONE, pid=None, create_time=None)
        rt.handle = None

    async def start_instance(self, name: str) -> InstanceRecord:
        """Start a stopped, exited or failed instance again with the same command line."""
        rt = self._rt(name)
        name = rt.rec.name  # callers may address it by port
        async with rt.lock:
            self._check_current(rt)
            if rt.state not in RESTING:
                raise Conflict(f"instance {name!r} is already {rt.state.value}")
            self._persist(rt, {"desired": "running"})
            rt.crash_times.clear()
            rt.ever_ready = False
            await self._cancel_task(rt)  # a task lingering after a crash loop ended
            self._spawn(rt, Event.START)
            self._run_task(rt, self._supervise)
        return rt.rec

    async def restart(self, name: str) -> InstanceRecord:
        """Stop, then start with the same command line (counts as a restart)."""
        name = self._rt(name).rec.name
        await self.stop(name)
        rec = await self.start_instance(name)
        self._persist(self._rt(name), {"restarts": rec.restarts + 1})
        return rec

    def set_idle_ttl(self, name: str, seconds: float | None) -> InstanceRecord:
        """Give a known instance its own idle TTL (seconds, 0 = never; None = the default
        for its origin), kept in the store. The router's idle check reads the record, so it
        holds from the next check on; the process is not touched."""
        if seconds is not None and not (isinstance(seconds, (int, float)) and seconds >= 0):
            raise UsageError("idle_ttl must be a number of seconds >= 0 (0 = never)")
        rt = self._rt(name)
        self._persist(rt, {"idle_ttl": None if seconds is None else float(seconds)})
        self._emit(rt, "idle_ttl")
        return rt.rec

    async def remove(self, name: str) -> None:
        """Stop the instance and forget it (its log file is kept)."""
        rt = self._rt(name)

        async def remove_it() -> None:
            async with rt.lock:  # stop and forget in one step: no start can slip in between
                self._check_current(rt)
                await self._stop_locked(rt)
                table.delete(self.store, rt.rec.name)
                self._rts.pop(rt.rec.name, None)
                rt.unsaved.clear()
                self.generation += 1
            self._emit(rt, "removed")

        await _run_to_end(remove_it(), f"remove-{rt.rec.name}")

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in list(self._rts)))

    def resolve_model(self, text: str) -> tuple[Path, str | None]:
        """(GGUF path, mmproj path or None) for a launch's MODEL: a file as given, else a
        model of the index (id, name, alias, prefix). NotFound / InvalidModelFile else."""
        try:
            exists = Path(text).expanduser().exists()
        except (RuntimeError, OSError, ValueError):  # "~nosuchuser/...", too long, NUL
            exists = False
        if exists or text.lower().endswith(".gguf") and ("/" in text or "\\" in text):
            return check_model_file(text), None
        from corral import models

        try:
            rec = models.resolve(self.store, text)
        except NotFound:
            if text.lower().endswith(".gguf"):
                return check_model_file(text), None
            raise NotFound(f"no model {text!r}: not a file, and not in the index (corral ls)")
        return check_model_file(rec.path), rec.mmproj

    # -- internals: launching ----------------------------------------------------
    def _split_owned(self, catalog: FlagCatalog, pairs: list) -> tuple[str, list]:
        owned = {}
        for name in ("--model", "--port", "--host"):
            flag = catalog.lookup(name)
            if flag is not None:
                owned[flag.long] = name
        host = "127.0.0.1"
        kept = []
        for flag, value in pairs:
            role = owned.get(flag)
            if role == "--host":
                host = check_host(value or host)
            elif role == "--model":
                raise OwnedFlag("corral sets --model itself: give the model as MODEL")
            elif role == "--port":
                raise OwnedFlag("corral sets --port itself: use corral's --port option")
            else:
                kept.append((flag, value))
        return host, kept

    def _with_memory_report(self, catalog: FlagCatalog, pairs: list) -> list:
        """``pairs`` plus ``--verbosity 4`` when the user set no verbosity: at that level
        llama-server prints its buffer sizes per device, which :meth:`_learn` reads back
        (setting ``fit_learn``; the log grows by ~40 lines per request)."""
        if not self.settings.fit_learn:
            return pairs
        lv = catalog.lookup("--verbosity") or catalog.lookup("-lv")
        chosen = {
            f.long
            for f in (
                catalog.lookup(n) for n in ("--verbosity", "-lv", "--verbose", "--log-disable")
            )
            if f is not None
        }
        if lv is None or any(flag in chosen for flag, _ in pairs):
            return pairs
        return pairs + [(lv.long, "4")]

    async def _learn(self, rt: Runtime) -> None:
        """After a planned instance loaded: what llama-server says it allocated per device
        (its buffer lines) goes into ``placement["real"]``; a device more than 15 % off
        the projection is logged as a warning and listed in ``placement["mismatch"]``."""
        placement = rt.rec.placement
        if not placement:
            return
        text = await asyncio.to_thread(_this_launch_log, self.log_path(rt.rec.name))
        from corral.fit import breakdown

        per = breakdown.parse_log(text).per_device()
        if not per:
            return  # nothing printed (verbosity below 4): nothing learnt
        real = {dev: sum(kinds.values()) for dev, kinds in per.items()}
        mismatch = []
        for d in placement.get("devices", ()):
            projected, got = int(d.get("used_bytes") or 0), real.get(d.get("id"), 0)
            if (projected or got) and abs(got - projected) > MISMATCH * max(projected, 1):
                mismatch.append(
                    {"id": d.get("id"), "projected_bytes": projected, "real_bytes": got}
                )
        if mismatch:
            log.warning(
                "%s: llama-server allocated %s, the plan said %s (over %d %% apart)",
                rt.rec.name,
                ", ".join(f"{m['id']} {m['real_bytes'] >> 20} MiB" for m in mismatch),
                ", ".join(f"{m['projected_bytes'] >> 20} MiB" for m in mismatch),
                int(MISMATCH * 100),
            )
        self._persist(rt, {"placement": {**placement, "real": real, "mismatch": mismatch}})
        self._emit(rt, "placement")

    def _choose_name(self, wanted: str | None, model: Path) -> str:
        taken = self.taken_names()
        if wanted is None:
            return derive_name(model, taken)
        check_name(wanted, "instance name")
        if wanted in taken:
            raise Conflict(
                f"an instance named {wanted!r} already exists "
                f"(corral start {wanted}, or corral delete {wanted})"
            )
        return wanted

    def _choose_port(self, wanted: int | None, host: str) -> int:
        used = table.used_ports(self.store)
        if wanted is not None:
            check_port(wanted)
            if wanted in used:
                raise Conflict(f"port {wanted} is already assigned to another instance")
            if not self.ops.port_free(host, wanted):
                raise PortInUse(f"port {wanted} on {host} is already in use by another process")
            return wanted
        low, high = self.settings.ports
        for port in range(low, high + 1):
            if port not in used and self.ops.port_free(host, port):
                return port
        raise PortInUse(f"no free port left in the range {low}-{high}")

    def _spawn(self, rt: Runtime, event: Event, **changes: Any) -> None:
        """Start the process for ``rt``, then apply ``event`` (START or BACKOFF_DONE).

        A process that cannot be started applies SPAWN_FAILED and raises.
        """
        self._check_epoch(rt)
        rec = rt.rec
        if not self.ops.port_free(rec.host, rec.port):
            self._apply(
                rt, Event.SPAWN_FAILED, last_error=f"port {rec.port} is taken by another process"
            )
            raise PortInUse(f"port {rec.port} on {rec.host} is already in use by another process")
        binary = Path(rec.argv[0])
        try:
            env = binary_env(binary)
            env.update(rec.env or {})
            handle = self.ops.spawn(rec.argv, env, self.log_path(rec.name))
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in argv or env
            reason = getattr(exc, "strerror", None) or str(exc)
            self._apply(rt, Event.SPAWN_FAILED, last_error=f"cannot run {binary}: {reason}")
            raise BinaryError(f"cannot run {binary}: {reason}")
        rt.handle = handle
        self._apply(
            rt,
            event,
            pid=handle.pid,
            create_time=handle.create_time,
            started_at=self.clock(),
            exit_code=None,
            ready_at=rt.rec.ready_at if rt.ever_ready else None,
            **changes,
        )

    # -- internals: the supervision loop -------------------------------------------
    def _run_task(self, rt: Runtime, body: Callable[[Runtime], Awaitable[None]]) -> None:
        """Run ``body(rt)`` as the instance's supervision task, under the instance's epoch.

        The coroutine is made inside the task, so a task cancelled before it ever ran
        leaves no never-awaited coroutine behind."""
        epoch = rt.epoch

        async def under_epoch():
            _EPOCH.set((id(rt), epoch))
            await body(rt)

        rt.task = asyncio.create_task(under_epoch(), name=f"supervise-{rt.rec.name}")
        rt.task.add_done_callback(_retrieve)

    async def _supervise(self, rt: Runtime) -> None:
        """Drive one instance until it rests (stopped, exited, failed) or we are closed."""
        try:
            while True:
                if rt.state is State.STARTING:
                    outcome = await self._await_ready(rt)
                    if outcome == "ready":
                        rt.ever_ready = True
                        self._apply(rt, Event.HEALTH_OK, ready_at=self.clock(), last_error=None)
                        try:
                            await self._learn(rt)
                        except (OSError, ValueError) as exc:  # never a reason to stop watching
                            log.warning(
                                "reading the memory report of %s failed: %s", rt.rec.name, exc
                            )
                        continue
                    if outcome == "timeout":
                        await self._terminate(rt)
                        self._apply(
                            rt,
                            Event.LOAD_TIMEOUT,
                            pid=None,
                            create_time=None,
                            last_error=f"not ready after {self.settings.load_timeout:g} s",
                        )
                        return
                elif rt.state in (State.READY, State.UNHEALTHY):
                    outcome = await self._monitor(rt)
                    if outcome == "hung":
                        if not await self._restart_hung(rt):
                            return
                        continue
                else:
                    return
                # outcome == "exit"
                if not await self._after_exit(rt):
                    return
        except (asyncio.CancelledError, _StaleTask):
            raise
        except Exception as exc:  # a supervisor bug must not leave an unwatched process behind
            log.exception("supervising %s failed", rt.rec.name)
            try:
                await self._terminate(rt)
            finally:
                if rt.state not in RESTING:
                    self._apply(
                        rt,
                        Event.FAULT,
                        pid=None,
                        create_time=None,
                        last_error=f"supervisor error: {exc}",
                    )

    async def _await_ready(self, rt: Runtime) -> str:
        """Poll /health fast until 200 ('ready'), the process exits ('exit') or time runs out."""
        started = time.monotonic()
        while True:
            if rt.handle is None or rt.handle.poll() is not None:
                return "exit"
            elapsed = time.monotonic() - started
            if elapsed > self.settings.load_timeout:
                return "timeout"
            status = await self._probe(rt, min(2.0, self.settings.probe_timeout))
            if status == "exit":
                return "exit"
            if status == 200:
                return "ready"
            # A refused connect or a 503 costs the server next to nothing: poll every
            # 10 ms for the first 10 s (readiness is noticed within ~10 ms), then 50 ms.
            await asyncio.sleep(0.01 if elapsed < 10.0 else 0.05)

    async def _monitor(self, rt: Runtime) -> str:
        """Watch a ready instance: 'exit' when the process ends, 'hung' after failed probes."""
        failures = 0
        next_probe = (
            time.monotonic()
            if rt.state is State.UNHEALTHY
            else time.monotonic() + self.settings.probe_interval
        )
        next_rotate = time.monotonic() + 5.0
        while True:
            if rt.handle is None or rt.handle.poll() is not None:
                return "exit"
            now = time.monotonic()
            if now >= next_rotate:
                next_rotate = now + 5.0
                try:
                    logs.rotate_if_needed(
                        self.log_path(rt.rec.name),
                        self.settings.log_max_bytes,
                        self.settings.log_backups,
                    )
                except OSError as exc:  # a full disk must not stop supervision
                    log.warning("rotating the log of %s failed: %s", rt.rec.name, exc)
            if now < next_probe:
                await asyncio.sleep(min(EXIT_CHECK_INTERVAL, next_probe - now))
                continue
            status = await self._probe(rt, self.settings.probe_timeout)
            if status == "exit":
                return "exit"
            next_probe = time.monotonic() + self.settings.probe_interval
            if status == 200:
                failures = 0
                if rt.state is State.UNHEALTHY:
                    self._apply(rt, Event.HEALTH_OK, last_error=None)
                continue
            failures += 1
            reason = "no answer" if status is None else f"HTTP {status}"
            self._apply(
                rt, Event.PROBE_FAILED, last_error=f"health probe failed {failures}x ({reason})"
            )
            if failures >= self.settings.probe_failures:
                return "hung"

    async def _probe(self, rt: Runtime, timeout: float) -> int | None | str:
        """One health probe, bounded whatever the probe does; 'exit' if the process ends.

        The probe runs as its own task and this waits on it with a deadline: a probe
        that hangs, or that swallows its cancellation, can neither hold this loop nor
        keep the supervision task from being cancelled (``asyncio.wait`` raises
        CancelledError in the waiter at once). A late probe is cancelled, not awaited.
        """
        task = asyncio.create_task(self.probe(rt.rec.host, rt.rec.port, timeout))
        task.add_done_callback(_retrieve)
        deadline = time.monotonic() + timeout + PROBE_GRACE
        try:
            while not task.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return None  # counts as no answer
                await asyncio.wait({task}, timeout=min(EXIT_CHECK_INTERVAL, left))
                if not task.done() and rt.handle is not None and rt.handle.poll() is not None:
                    return "exit"
            if task.cancelled() or task.exception() is not None:
                return None
            return task.result()
        finally:
            if not task.done():
                task.cancel()

    async def _restart_hung(self, rt: Runtime) -> bool:
        """Kill a hung instance and start it again; False when the crash limit is hit."""
        now = self.clock()
        rt.crash_times = recent(rt.crash_times + [now], now, self.settings.crash_window)
        give_up = len(rt.crash_times) >= self.settings.crash_limit
        await self._terminate(rt)
        msg = f"hung: {self.settings.probe_failures} health probes failed; "
        nxt = self._apply(
            rt,
            Event.HUNG,
            give_up=give_up,
            pid=None,
            create_time=None,
            last_error=msg + ("crash limit reached" if give_up else "restarted"),
        )
        if nxt is State.FAILED:
            return False
        return await self._respawn_after(rt, 0.0)

    async def _after_exit(self, rt: Runtime) -> bool:
        """Decide what an exit means: restart after backoff, or rest. True to keep going."""
        code = rt.handle.poll() if rt.handle else UNKNOWN_EXIT
        tail = logs.tail(self.log_path(rt.rec.name), LOG_TAIL_LINES)
        last_line = next((line for line in reversed(tail) if line.strip()), "")
        reason = describe_exit(code) + (f": {last_line.strip()[:300]}" if last_line else "")
        if not rt.ever_ready:
            # Never became ready since the user launched it: fail fast, do not loop.
            self._apply(
                rt,
                Event.EXIT,
                give_up=True,
                pid=None,
                create_time=None,
                exit_code=code,
                last_error=reason,
            )
            return False
        restart = should_restart(rt.rec.restart_policy, code)
        give_up = False
        if restart:
            now = self.clock()
            rt.crash_times = recent(rt.crash_times + [now], now, self.settings.crash_window)
            give_up = len(rt.crash_times) >= self.settings.crash_limit
        if give_up:
            n, window = len(rt.crash_times), self.settings.crash_window
            reason = f"crashed {n} times in {window:g} s; last {reason}"
        nxt = self._apply(
            rt,
            Event.EXIT,
            restart=restart,
            give_up=give_up,
            pid=None,
            create_time=None,
            exit_code=code,
            last_error=reason,
        )
        if nxt is not State.BACKOFF:
            return False
        delay = backoff_delay(
            len(rt.crash_times), self.settings.backoff_initial, self.settings.backoff_max
        )
        return await self._respawn_after(rt, delay)

    async def _respawn_after(self, rt: Runtime, delay: float) -> bool:
        """BACKOFF -> STARTING after ``delay``; True when spawned (the loop goes on)."""
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            self._spawn(rt, Event.BACKOFF_DONE, restarts=rt.rec.restarts + 1)
        except (PortInUse, BinaryError) as exc:
            log.warning("restart of %s failed: %s", rt.rec.name, exc)
            return False
        return True

    async def _resume_vanished(self, rt: Runtime) -> None:
        """Task entry for an instance that died while no daemon watched it."""
        if await self._respawn_after(rt, 0.0):
            await self._supervise(rt)

    async def _terminate(self, rt: Runtime) -> None:
        """SIGTERM the group, wait stop_timeout, SIGKILL whatever is left, wait for it.

        Bounded: at most ``stop_timeout + KILL_WAIT`` seconds.
        """
        self._check_epoch(rt)
        handle = rt.handle
        if handle is None:
            return
        handle.signal_group(signal.SIGTERM)
        if not await wait_gone(handle, self.settings.stop_timeout):
            log.warning(
                "%s ignored SIGTERM for %g s: SIGKILL", rt.rec.name, self.settings.stop_timeout
            )
            handle.signal_group(signal.SIGKILL)
            if not await wait_gone(handle, KILL_WAIT):
                log.error(
                    "%s (pid %s) still there %g s after SIGKILL", rt.rec.name, handle.pid, KILL_WAIT
                )
        self._emit(rt, "terminated")

    async def _cancel_task(self, rt: Runtime) -> None:
        """End the instance's supervision task, waiting at most TASK_CANCEL_GRACE.

        The epoch moves first: from here on the old task can neither write a state nor
        spawn or signal a process, so abandoning one that ignores its cancellation is safe.
        """
        task, rt.task = rt.task, None
        rt.epoch += 1
        if task is None or task.done() or task is asyncio.current_task():
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=TASK_CANCEL_GRACE)
        if not done:
            log.error(
                "the supervision task of %s ignored its cancellation for %g s: abandoned "
                "(it can no longer act on the instance)",
                rt.rec.name,
                TASK_CANCEL_GRACE,
            )
            self.abandoned.append(rt.rec.name)

    # -- internals: state and events ------------------------------------------------
    def _check_epoch(self, rt: Runtime) -> None:
        """Refuse to act from a supervision task that a stop or close has retired."""
        mine = _EPOCH.get()
        if mine is not None and mine[0] == id(rt) and mine[1] != rt.epoch:
            raise _StaleTask(rt.rec.name)

    def _apply(
        self,
        rt: Runtime,
        event: Event,
        *,
        restart: bool = False,
        give_up: bool = False,
        **changes: Any,
    ) -> State:
        """The one writer of an instance's state: ``transition`` decides, this records.

        Memory first (the truth while the daemon lives), then the store; the new state
        wakes every waiter and is published. Raises InvalidTransition for an event that
        cannot happen in the current state.
        """
        self._check_epoch(rt)
        nxt = transition(rt.state, event, restart=restart, give_up=give_up)
        changes["state"] = nxt.value
        for key, value in changes.items():
            setattr(rt.rec, key, value)
        self._persist(rt, changes)
        waiters, rt.changed = rt.changed, asyncio.Event()
        waiters.set()
        self._emit(rt, "state")
        return nxt

    def _persist(self, rt: Runtime, changes: dict[str, Any]) -> None:
        """Write ``changes`` (and anything not yet saved) to the store; on failure keep
        them for :meth:`_flush_unsaved` and go on supervising."""
        for key, value in changes.items():
            setattr(rt.rec, key, value)
        rt.unsaved.update(changes)
        if self._rts.get(rt.rec.name) is not rt:
            rt.unsaved.clear()  # removed meanwhile: nothing to write
            return
        self._write_unsaved(rt)

    def _write_unsaved(self, rt: Runtime) -> bool:
        if not rt.unsaved:
            return True
        try:
            table.update(self.store, rt.rec.name, **rt.unsaved)
        except (StoreError, sqlite3.Error, OSError) as exc:
            if not self._store_warned:
                log.warning(
                    "cannot write instance state (%s); keeping it in memory and retrying", exc
                )
                self._store_warned = True
            return False
        rt.unsaved.clear()
        return True

    def _reregister(self, store: Store) -> None:
        """corral.db was deleted or replaced under the daemon and rebuilt: put back every
        instance this supervisor knows, as it is in memory (memory is the truth)."""
        for rt in list(self._rts.values()):
            if table.find(store, rt.rec.name) is None:
                table.insert(store, rt.rec)
                log.warning("re-registered instance %s in the rebuilt store", rt.rec.name)
            rt.unsaved.clear()
            cols = {
                k: getattr(rt.rec, k)
                for k in (
                    "state",
                    "desired",
                    "pid",
                    "create_time",
                    "restarts",
                    "exit_code",
                    "last_error",
                    "started_at",
                    "ready_at",
                )
            }
            table.update(store, rt.rec.name, **cols)

    def _flush_unsaved(self) -> None:
        """Retry every write the store refused (a full disk, a store gone for a moment)."""
        ok = all([self._write_unsaved(rt) for rt in list(self._rts.values())])
        if ok and self._store_warned:
            log.info("instance state written to the store again")
            self._store_warned = False

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(STORE_RETRY_INTERVAL)
            if any(rt.unsaved for rt in self._rts.values()):
                self._flush_unsaved()

    def _emit(self, rt: Runtime, kind: str) -> None:
        payload = {
            "type": kind,
            "instance": rt.rec.name,
            "state": rt.rec.state,
            "pid": rt.rec.pid,
            "port": rt.rec.port,
            "restarts": rt.rec.restarts,
            "time": self.clock(),
        }
        self.events.publish(payload)


class _StaleTask(Exception):
    """Raised inside a supervision task that a stop retired: it must end, not act."""


#: (id of the Runtime, epoch) of the supervision task running in this context.
_EPOCH: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "corral_supervision_epoch", default=None
)


def _retrieve(task: asyncio.Task) -> None:
    """Done callback: read a finished task's exception so none goes unreported."""
    if not task.cancelled():
        exc = task.exception()
        if exc is not None and not isinstance(exc, _StaleTask):
            log.error("task %s failed: %r", task.get_name(), exc)


async def _run_to_end(coro, name: str):
    """Run ``coro`` in its own task; a cancelled caller stops waiting, the work goes on."""
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _this_launch_log(path: Path, limit: int = 2 * 1024 * 1024) -> str:
    """The instance's log since its last launch header (``--- corral ...``), at most
    the last ``limit`` bytes (the buffer lines come right after the header)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            data = fh.read()
    except FileNotFoundError:
        return ""
    at = data.rfind(b"\n--- corral ")
    if at < 0 and data.startswith(b"--- corral "):
        at = 0
    return data[at:].decode("utf-8", errors="replace") if at >= 0 else ""


def _alias_argv(catalog: FlagCatalog, pairs: list, env: dict, name: str) -> list[str]:
    """``--alias NAME`` unless the user named the model themselves (``-a``/``--alias`` or
    ``LLAMA_ARG_ALIAS``) or the build has no such flag: llama-server then answers with
    ``"model": NAME``, the name clients used, instead of the file's path."""
    flag = catalog.lookup("--alias")
    if flag is None or "LLAMA_ARG_ALIAS" in env or any(f == flag.long for f, _ in pairs):
        return []
    return [flag.long, name]


def _refuse_nul(pairs: list) -> None:
    """A NUL byte cannot reach execve: refuse it as bad input before anything is stored."""
    for flag, value in pairs:
        if "\0" in flag or (value is not None and "\0" in value):
            raise UsageError(f"the value of {flag} holds a NUL byte")


# Re-exported for callers that think of it as the supervisor's view of an instance.
instance_view = table.view
