"""OpenAI-compatible router: ``/v1/*`` on the daemon, routed by the body's ``model``.

The model names an instance (its name or an alias), a preset (name or alias), or a model
of the index (id, name, alias, unique prefix). What is not running is started on demand,
exactly once however many requests arrive together; the requests wait in a bounded queue
(503 with Retry-After beyond it). Bytes are forwarded as they arrive; the response is
only looked at after the client has it all (usage counters). A client that disconnects
closes the upstream connection, which makes llama-server stop generating; upstream
errors keep their status and body.

Instances the router started are ephemeral: stopped and forgotten after ``idle_ttl``
unused, or evicted least-recently-used when the cap (``router_max_instances``) or the
host-RAM budget (``router_memory_budget``) would be exceeded, or when the memory planner
finds no room for a start. Pinned instances and instances with requests in flight (or
still loading) are never evicted; instances the user launched are never evicted and idle
out only when they were given their own ``idle_ttl``.

Memory. Every launch is planned by the supervisor against the devices' free memory minus
what the other instances commit; a start that does not fit raises NoRoom with the bytes
missing per device. The router then stops the least recently used router instance whose
plan holds memory on one of those devices (never one that holds nothing there), plans
again, and repeats until the start fits. When evicting every such instance would not
cover the shortfall, nothing is stopped and the answer is 503 with Retry-After, naming
the short devices and what holds them (busy, pinned, loading, a user's); when not even
everything corral runs there would cover it, the model does not fit this machine and
the 409 ``no_room`` stands (retrying would not help). The budget counts an instance's
host bytes from its plan (the file size when it was not planned: it fixed its own
``-ngl``/``-ts``/``--device``).

Who may start what. A request's caller is ``admin`` or ``inference`` (the guard puts it in
the ASGI scope, :func:`corral.api.openai.caller_scope` reads it; the router is told
``admin=``). Anyone may have the router start what is meant
for it: presets, indexed models, the router's own instances, and a user instance the
router itself stopped for being idle (scale to zero, remembered while this daemon runs).
Any other resting instance someone launched (origin ``user``: stopped, exited, failed)
stays so unless an admin starts it: an inference key gets 403. The name still means
the same instance whoever asks; it does not fall through to an index model of that name.

Instances launched with ``--api-key`` (or ``--api-key-file``, or ``LLAMA_API_KEY`` in
their env) are called with their own key (:meth:`Router.upstream_key`); the client's
``Authorization`` (a corral key) never goes upstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from corral.errors import (
    Busy,
    CorralError,
    Forbidden,
    LaunchFailed,
    NoRoom,
    NotFound,
    UpstreamKeyError,
    UsageError,
)
from corral.events import Broadcaster
from corral.redact import first_api_key, first_key_line
from corral.supervisor.states import RESTING, State
from corral.supervisor.supervisor import Supervisor, derive_name
from corral.upstream import Pool

log = logging.getLogger("corral.router")

#: Headers not passed between client and upstream (hop-by-hop, or recomputed).
HOP_HEADERS = {
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "authorization",
    "x-api-key",  # Anthropic clients' way to send a corral key: never forwarded either
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "origin",
    "cookie",
    "expect",
}  # expect: the daemon's server already answered 100-continue
#: States in which an instance is (or will shortly be) serving.
LIVE = (State.READY, State.STARTING, State.UNHEALTHY, State.BACKOFF)
#: How much of a response is kept to read its usage once the client has it all.
USAGE_TAIL = 16 * 1024
USAGE_BODY_MAX = 4 * 1024 * 1024
ROUTE_CACHE_MAX = 1024
MODEL_NAMES_SHOWN = 30  # names listed in the answer to a request without a model
CLIENT_GONE = 499  # status recorded for a request whose client left before the answer


@dataclass
class Usage:
    """Counters of one instance (and, summed, of one model)."""

    requests: int = 0
    errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_per_second: float | None = None  # of the last response that reported timings
    last_used_at: float | None = None  # wall clock
    in_flight: int = 0

    def to_dict(self) -> dict:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "tokens_per_second": self.tokens_per_second,
            "last_used_at": self.last_used_at,
            "in_flight": self.in_flight,
        }


@dataclass
class Target:
    """What a request's ``model`` resolved to before any instance is chosen."""

    key: str  # dedup key for on-demand starts
    label: str  # the model label for metrics and usage
    preset: str | None = None
    model: str | None = None  # model id/path when no preset

    @classmethod
    def of_model(cls, entry) -> Target:
        """The target of a model of the index (its ``ModelRecord``), started from its file."""
        return cls(key=f"model:{entry.path}", label=entry.name, model=entry.id)


class Router:
    """Finds (or starts) the instance serving a model, proxies requests, keeps counters."""

    def __init__(self, supervisor: Supervisor, metrics=None, pulls=None) -> None:
        from corral.metrics import Metrics

        self.supervisor = supervisor
        self.pulls = pulls  # the daemon's PullManager (router_pull_missing), or None
        self.settings = supervisor.settings
        self.metrics = metrics or Metrics()
        self.events = Broadcaster()
        self._starting: dict[str, asyncio.Task] = {}
        self._waiting: dict[str, int] = {}  # queue key -> requests waiting for a load
        self._queue_alias: dict[str, str] = {}  # "instance:NAME" -> key of its start
        self._usage: dict[str, Usage] = {}
        self._last_used: dict[str, float] = {}  # instance -> monotonic time of last request end
        self._labels: dict[str, str] = {}  # instance -> model label of its requests
        self._routes: dict[str, tuple[str, str]] = {}  # request model -> (instance, label)
        self._routes_gen = supervisor.generation
        self._series: dict[tuple, tuple] = {}  # metric children per (model, instance, ...)
        self._evict_lock = asyncio.Lock()
        self._idled: set[str] = set()  # user instances the router stopped for idleness
        self._key_files: dict[str, tuple[int, int, str]] = {}  # path -> (mtime, size, key)
        self._reaper: asyncio.Task | None = None
        self.upstream = Pool()  # keep-alive connections to the instances

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        """Start the idle reaper (call on the event loop)."""
        self._reaper = asyncio.create_task(self._reap_idle(), name="router-idle-reaper")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        self.upstream.close()

    # -- resolution ------------------------------------------------------------------
    def _live(self, pred) -> object | None:
        """The best live instance matching ``pred``: ready first, then by age."""
        best = None
        for rec in self.supervisor.list():
            if rec.desired != "running" or State(rec.state) not in LIVE or not pred(rec):
                continue
            if State(rec.state) is State.READY:
                return rec
            best = best or rec
        return best

    def resolve(self, model: str, *, admin: bool = False):
        """(instance or None, Target): a live instance for ``model``, else what to start.

        Forbidden when that is a resting user instance and the caller is not ``admin``.
        """
        if self._routes_gen != self.supervisor.generation:
            self._routes.clear()  # an instance came or went: names and aliases may differ now
            self._routes_gen = self.supervisor.generation
        cached = self._routes.get(model)
        if cached is not None:  # the hot path: no SQLite, no scan
            name, label = cached
            rec = self.supervisor.find(name)
            if rec is not None and rec.desired == "running" and rec.state == State.READY:
                return rec, Target(key=f"instance:{name}", label=label)
            del self._routes[model]
        rec, target = self._resolve(model, admin)
        if rec is not None and State(rec.state) is State.READY:
            if len(self._routes) >= ROUTE_CACHE_MAX:
                self._routes.clear()
            self._routes[model] = (rec.name, target.label)
        return rec, target

    def ready_route(self, model: str):
        """The ready instance ``model`` was last routed to, from the route cache alone
        (no SQLite, no scan); None when not cached or no longer ready."""
        if self._routes_gen != self.supervisor.generation:
            return None
        cached = self._routes.get(model)
        if cached is None:
            return None
        rec = self.supervisor.find(cached[0])
        if rec is not None and rec.desired == "running" and rec.state == State.READY:
            return rec
        return None

    async def fits_here(self, target: Target) -> bool | None:
        """Whether the memory planner says a start of ``target`` fits this machine now
        (None: not planned, an instance's own flags, or the plan cannot be made)."""
        if target.preset is None and target.model is None:
            return None
        try:
            plan = await self.supervisor.plan_fit(await self._compose(target))
        except CorralError:
            return None
        return None if plan is None else plan.fits

    def pullable(self, model: str) -> bool:
        """Whether a request for ``model``, which nothing has, may have it pulled first:
        ``router_pull_missing`` is on and the name looks like a Hub reference."""
        return bool(self.settings.router_pull_missing and self.pulls is not None and "/" in model)

    async def pull_missing(self, model: str, *, admin: bool) -> bool:
        """Pull ``model`` (a Hub reference nothing here has) into this daemon's index when
        :meth:`pullable`: True once it is there, False when it is no Hub reference.

        Only an admin's request pulls (an inference key is handed to applications, which
        should not fill the disk: Forbidden); the request waits at most
        ``router_queue_timeout`` (Busy after, the pull going on); a failed pull is its
        own error (not found on the Hub, no space...)."""
        if not self.pullable(model):
            return False
        if not admin:
            raise Forbidden(
                f"model {model!r} is not pulled yet and only an admin key may have it pulled "
                f"(corral pull {model})"
            )
        try:
            job = await self.pulls.start(model)
        except UsageError:
            return False  # not a Hub reference after all: the caller's NotFound stands
        log.info("pulling %s for a request (router_pull_missing)", model)
        job = await self.pulls.wait(job.id, timeout=self.settings.router_queue_timeout)
        if job.state in ("queued", "running"):
            raise Busy(f"{model!r} is still being pulled ({job.id}); try again later", 30)
        if job.state != "done":
            raise pull_error(model, job.error, job.error_code)
        self._routes.clear()
        return True

    def may_start(self, rec) -> bool:
        """Whether a non-admin request may have the router start ``rec`` (resting) again."""
        return rec.origin != "user" or rec.name in self._idled

    def admin_acted(self, name: str) -> None:
        """An admin started, stopped, restarted or removed ``name``: from now on it is
        theirs, and the router starts it on demand only if it idles it out again."""
        self._idled.discard(name)

    def forget_routes(self) -> None:
        """Resolve every name afresh (a preset was saved or removed)."""
        self._routes.clear()

    def _resolve(self, model: str, admin: bool):
        from corral import models, presets

        rec = self._live(lambda r: model == r.name or model in (r.aliases or ()))
        if rec is not None:
            return rec, Target(key=f"instance:{rec.name}", label=rec.name)
        for rec in self.supervisor.list():  # a known instance, stopped: start it again
            if rec.name == model and State(rec.state) in RESTING:
                if not admin and not self.may_start(rec):
                    raise Forbidden(
                        f"instance {rec.name!r} is {rec.state} and was launched by a user; "
                        "only an admin key may start it again "
                        f"(corral start {rec.name}, or POST /api/v1/instances/{rec.name}/start)"
                    )
                return None, Target(key=f"instance:{rec.name}", label=rec.name)
        preset = presets.find(self.supervisor.store, model)
        if preset is not None:
            rec = self._live(lambda r: r.preset == preset.name)
            target = Target(key=f"preset:{preset.name}", label=preset.name, preset=preset.name)
            return rec, target
        try:
            entry = models.resolve(self.supervisor.store, model)
        except NotFound:
            raise NotFound(
                f"model {model!r} is not running, not a preset and not in the index "
                "(GET /v1/models lists what can be used)"
            ) from None
        rec = self._live(lambda r: r.model == entry.path and r.preset is None)
        return rec, Target.of_model(entry)

    async def instance_for(self, model: str, *, admin: bool = False):
        """(ready instance, label) for ``model``, started on demand (once per target)."""
        rec, target = self.resolve(model, admin=admin)
        if rec is not None and State(rec.state) is State.READY:
            return rec, target.label
        # Requests that found the instance already launched count against the same queue
        # as those that asked for its start (the start links the two keys).
        qkey = (
            self._queue_alias.get(f"instance:{rec.name}", f"instance:{rec.name}")
            if rec is not None
            else target.key
        )
        ready = await self._queued(qkey, target.label, lambda: self._await_ready(rec, target))
        return ready, target.label

    async def ensure(
        self,
        target: Target,
        *,
        flags: tuple[str, ...] | list[str] = (),
        idle_ttl: float | None = None,
        replace: str | None = None,
    ):
        """Start an instance of ``target`` (a preset or a model of the index) launched with
        the extra llama-server ``flags``, and return it ready: the on-demand start's path
        (room made under the cap and the memory budget, eviction, the queue, events, load
        metrics). Concurrent calls for the same target and flags share one start; with no
        flags that is the on-demand start's own.

        The caller has looked for a live instance that already fits (only it knows what
        "fits" means for its flags). ``replace`` names an instance this start supersedes
        (the same model with another context): it is retired first, under the eviction
        lock, if it may still be evicted then (a router instance, loaded, nothing in
        flight, not pinned); otherwise the new one starts beside it. ``idle_ttl`` (seconds,
        0 = never) is the instance's own, also when the start was another caller's.
        """
        if target.key.startswith("instance:"):
            raise UsageError(
                f"{target.label!r} is an instance: flags can be chosen for a preset or a "
                "model of the index"
            )
        flags = tuple(flags)
        key = target.key + (" " + " ".join(flags) if flags else "")
        start = Target(key=key, label=target.label, preset=target.preset, model=target.model)

        async def started():
            task = self._start_task(key, lambda: self._start(start, flags, idle_ttl, replace))
            return await asyncio.shield(task)

        rec = await self._queued(key, target.label, started)
        if idle_ttl is not None and rec.idle_ttl != idle_ttl:
            rec = self.supervisor.set_idle_ttl(rec.name, idle_ttl)
        return rec

    async def _queued(self, qkey: str, label: str, wait):
        """``await wait()`` as one of the requests queued for ``qkey``'s load: at most
        ``router_queue_limit`` of them, each at most ``router_queue_timeout`` seconds (the
        load goes on in the background); Busy (503) beyond either."""
        waiting = self._waiting.get(qkey, 0)
        if waiting >= self.settings.router_queue_limit:
            raise Busy(
                f"{waiting} requests already wait for {label!r} to load; try again shortly",
                retry_after=5,
            )
        self._waiting[qkey] = waiting + 1
        self.metrics.queue_depth.labels(label).set(waiting + 1)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can lose the caller's
            # cancellation (a client that left) when the load completes at that moment.
            async with asyncio.timeout(self.settings.router_queue_timeout):
                return await wait()
        except TimeoutError:
            raise Busy(
                f"{label!r} is still loading after "
                f"{self.settings.router_queue_timeout:g} s; try again later",
                retry_after=30,
            ) from None
        finally:
            left = self._waiting[qkey] - 1
            if left:
                self._waiting[qkey] = left
            else:
                del self._waiting[qkey]
            self.metrics.queue_depth.labels(label).set(left)

    async def _await_ready(self, rec, target: Target):
        if rec is None:
            task = self._start_task(target.key, lambda: self._start(target))
            rec = await asyncio.shield(task)
        if State(rec.state) is not State.READY:
            rec = await self.supervisor.wait_ready(rec.name)
        return rec

    def _start_task(self, key: str, make) -> asyncio.Task:
        """The start under way for ``key``, or a new one (``make()``): one per key."""
        task = self._starting.get(key)
        if task is None or task.done():
            task = asyncio.create_task(make())
            self._starting[key] = task
            task.add_done_callback(lambda t, k=key: self._forget_start(k, t))
        return task

    def _forget_start(self, key: str, task: asyncio.Task) -> None:
        if self._starting.get(key) is task:
            del self._starting[key]
        for alias in [a for a, k in self._queue_alias.items() if k == key]:
            del self._queue_alias[alias]
        if not task.cancelled():
            task.exception()  # retrieved: the waiters got it

    async def _start(
        self,
        target: Target,
        flags: tuple[str, ...] = (),
        idle_ttl: float | None = None,
        replace: str | None = None,
    ):
        """Start what ``target`` names (making room first) and wait until it is ready;
        ``flags``, ``idle_ttl`` and ``replace`` as :meth:`ensure` says."""
        began = time.monotonic()
        if target.key.startswith("instance:"):
            name = target.key.split(":", 1)[1]
            self._idled.discard(name)  # running again; idle it out again to earn it back
            async with self._evict_lock:
                rec = await self._launch_with_room(
                    lambda: self.supervisor.start_instance(name), target.label
                )
        else:
            rec = await self._launch_new(target, flags, idle_ttl, replace)
            self._queue_alias[f"instance:{rec.name}"] = target.key
        self._publish("starting", rec.name, target.label)
        try:
            rec = await self.supervisor.wait_ready(rec.name)
        except LaunchFailed:
            self.metrics.load_failures.labels(target.label).inc()
            if rec.origin == "router":  # ephemeral: do not leave it (and its port) behind
                await self._retire(rec, "failed to load")
            raise
        self._last_used[rec.name] = time.monotonic()
        self.metrics.load_seconds.labels(target.label).observe(time.monotonic() - began)
        return rec

    async def _launch_new(
        self, target: Target, flags: tuple[str, ...], idle_ttl: float | None, replace: str | None
    ):
        """Compose and launch a router instance of a preset or a model of the index."""
        sup = self.supervisor
        spec = await self._compose(target, flags, idle_ttl)
        if spec.name is None:  # a model of the index (a preset names its own)
            spec.name = derive_name(Path(target.label), sup.taken_names())
        async with self._evict_lock:  # room made and taken in one step
            old = next((r for r in self.evictable() if r.name == replace), None)
            if old is not None:
                await self._retire(old, f"replaced (a start with {' '.join(flags)})")
            await self._make_room(await self._host_need(spec))
            return await self._launch_with_room(lambda: sup.launch(spec), target.label)

    async def _compose(self, target: Target, flags=(), idle_ttl: float | None = None):
        """The launch spec of a router instance of ``target`` (a preset or a model)."""
        from corral import presets

        sup = self.supervisor
        return await presets.compose(
            sup.store,
            sup.catalog,
            taken=[r.name for r in sup.list()],
            preset=target.preset,
            model=target.model,
            flags=list(flags),
            idle_ttl=idle_ttl,
            origin="router",
        )

    def _model_bytes(self, model: str | None) -> int:
        if not model:
            return 0
        try:
            path, _ = self.supervisor.resolve_model(model)
            return path.stat().st_size
        except (CorralError, OSError):
            return 0

    async def _host_need(self, spec) -> int:
        """Host RAM the launch of ``spec`` will hold, for ``router_memory_budget``: its
        plan's host bytes, or (not planned) its model file's size. 0 without a budget."""
        if not self.settings.router_memory_budget:
            return 0
        plan_fit = getattr(self.supervisor, "plan_fit", None)
        plan = None
        if plan_fit is not None:
            try:
                plan = await plan_fit(spec)
            except CorralError:
                plan = None  # the launch itself will say what is wrong
        if plan is not None:
            host = [d.used_bytes for d in plan.devices if d.device.kind == "host"]
            if host:
                return host[0]
        return self._model_bytes(spec.model)

    # -- eviction and idle TTL ----------------------------------------------------------
    def _router_live(self) -> list:
        return [
            r
            for r in self.supervisor.list()
            if r.origin == "router" and r.desired == "running" and State(r.state) in LIVE
        ]

    def evictable(self) -> list:
        """Router-started instances that may be stopped now, least recently used first."""
        usage = self._usage
        out = [
            r
            for r in self._router_live()
            if not r.pinned
            and State(r.state) is not State.STARTING
            and (usage.get(r.name) or Usage()).in_flight == 0
        ]
        return sorted(out, key=lambda r: self._last_used.get(r.name, 0.0))

    async def _make_room(self, needed_bytes: int) -> None:
        """Evict LRU router instances until the cap and the host-RAM budget allow one more
        (the caller holds ``_evict_lock``)."""
        cap = self.settings.router_max_instances
        budget = self.settings.router_memory_budget
        while True:
            live = self._router_live()
            over_cap = cap > 0 and len(live) >= cap
            over_budget = (
                budget > 0 and live and sum(_host_bytes(r) for r in live) + needed_bytes > budget
            )
            if not over_cap and not over_budget:
                return
            victims = self.evictable()
            if not victims:
                why = (
                    f"all {len(live)} router-started instances are busy, pinned or loading "
                    f"(cap {cap})"
                    if over_cap
                    else f"the memory budget ({budget} bytes) is held by busy instances"
                )
                raise Busy(why + "; try again shortly", retry_after=10)
            await self._retire(victims[0], "evicted (least recently used)")

    async def _launch_with_room(self, launch, label: str):
        """``launch()``; while it finds no room (NoRoom), evict the least recently used
        router instance holding memory on a device that is short, and try again.

        The planner says what is missing per device (``short_bytes``, for the placement
        that came closest); each eviction is followed by a new plan, which may place the
        launch elsewhere, so no more is evicted than needed. Nothing is evicted when all
        that could be would not cover the shortfall: Busy (503) then, naming the devices
        and what holds them. When all that corral runs there would not cover it either,
        the model does not fit this machine: the NoRoom (409) stands.
        """
        tried: set[str] = set()
        while True:
            try:
                return await launch()
            except NoRoom as exc:
                short = {dev: n for dev, n in exc.short_bytes.items() if n > 0}
                victim = self._memory_victim(short, label, exc, tried)
            tried.add(victim.name)
            where = ", ".join(sorted(dev for dev in short if _held_on(victim, dev)))
            await self._retire(victim, f"evicted (least recently used on {where})")

    def _memory_victim(self, short: dict[str, int], label: str, exc: NoRoom, tried: set[str]):
        """The LRU evictable router instance holding memory on a ``short`` device, or a
        Busy saying why there is none worth stopping (see :meth:`_launch_with_room`)."""
        holders = [
            r
            for r in self.supervisor.list()
            if r.desired == "running" and any(_held_on(r, d) for d in short)
        ]
        if sum(_held_on(r, d) for r in holders for d in short) < sum(short.values()):
            raise exc  # not even with every instance gone: waiting will not help
        candidates = [
            r
            for r in self.evictable()
            if r.name not in tried and any(_held_on(r, d) for d in short)
        ]
        freeable = sum(_held_on(r, d) for r in candidates for d in short)
        if candidates and freeable >= sum(short.values()):
            return candidates[0]
        from corral.fit.devices import human_bytes

        missing = ", ".join(f"{dev} is short {human_bytes(n)}" for dev, n in sorted(short.items()))
        kept = [r for r in holders if r not in candidates]
        why = ", ".join(f"{r.name} ({_keep_reason(r, self._usage)})" for r in kept)
        raise Busy(
            f"no room for {label!r}: {missing}"
            + (f", held by {why}" if why else "")
            + (
                ""
                if not candidates
                else f"; evicting {', '.join(r.name for r in candidates)} would free only "
                f"{human_bytes(freeable)}"
            )
            + "; try again shortly",
            retry_after=10,
        )

    async def _retire(self, rec, reason: str) -> None:
        """Stop a router instance and forget it (its log is kept); user ones are only stopped."""
        log.info("%s: %s", rec.name, reason)
        try:
            if rec.origin == "router":
                await self.supervisor.remove(rec.name)
            else:
                await self.supervisor.stop(rec.name)
                self._idled.add(rec.name)  # stopped by the router: it may start it again
        except NotFound:
            return
        if rec.origin == "router":  # gone for good: its counters and series go too
            self._usage.pop(rec.name, None)
            self._labels.pop(rec.name, None)
            self._drop_series(rec.name)
        self._last_used.pop(rec.name, None)
        self.metrics.evictions.labels(reason.split(" ")[0]).inc()
        self._publish(reason.split(" ")[0], rec.name, rec.name, reason=reason)

    def _drop_series(self, instance: str) -> None:
        """Forget the per-instance metric series of an instance that is gone."""
        m = self.metrics
        for key in [k for k in self._series if k[1] == instance]:
            del self._series[key]
            label, name, endpoint, status = key
            for metric, labels in (
                (m.requests, (label, name, endpoint, str(status))),
                (m.errors, (label, name)),
                (m.tokens_per_second, (label, name)),
            ):
                try:
                    metric.remove(*labels)
                except KeyError:  # already removed through another key
                    pass

    async def unload(self, name: str) -> bool:
        """Unload instance ``name`` now, as an idle-out does: a router instance is stopped
        and forgotten (its counters and metric series go with it); a user's is stopped,
        and the router may start it again on demand. False when it is not running (or
        not known)."""
        rec = self.supervisor.find(name)
        if rec is None or rec.desired != "running" or State(rec.state) not in LIVE:
            return False
        await self._retire(rec, "unloaded (asked)")
        return True

    def idle_ttl_of(self, rec) -> float:
        """Seconds of disuse after which ``rec`` is stopped; 0 = never."""
        if rec.pinned:
            return 0.0
        if rec.idle_ttl is not None:
            return float(rec.idle_ttl)
        return float(self.settings.idle_ttl) if rec.origin == "router" else 0.0

    async def reap_idle_once(self) -> list[str]:
        """Stop every instance idle longer than its TTL; returns their names."""
        now = time.monotonic()
        done = []
        for rec in self.supervisor.list():
            if rec.origin == "router" and State(rec.state) in (State.FAILED, State.EXITED):
                await self._retire(rec, "gave up (crash loop)")  # ephemeral, like the rest
                done.append(rec.name)
                continue
            ttl = self.idle_ttl_of(rec)
            if ttl <= 0 or rec.desired != "running" or State(rec.state) is not State.READY:
                continue
            if (self._usage.get(rec.name) or Usage()).in_flight:
                continue
            last = self._last_used.setdefault(rec.name, now)  # adopted/launched: count from now
            if now - last >= ttl:
                await self._retire(rec, f"idle for {ttl:g} s")
                done.append(rec.name)
        return done

    async def _reap_idle(self) -> None:
        while True:
            ttls = [
                t
                for t in (
                    self.idle_ttl_of(r) for r in self.supervisor.list() if r.desired == "running"
                )
                if t > 0
            ]
            await asyncio.sleep(max(0.5, min([5.0] + [t / 4 for t in ttls])))
            try:
                await self.reap_idle_once()
            except Exception:  # the reaper must survive a failed stop
                log.exception("idle reaper")

    def _publish(self, kind: str, instance: str, model: str, **extra) -> None:
        self.events.publish(
            {"type": kind, "instance": instance, "model": model, "time": time.time(), **extra}
        )

    # -- listing -------------------------------------------------------------------------
    def models(self, *, admin: bool = True) -> list[dict]:
        """Every name a request may use, each once: instances, presets and indexed models
        (a router instance shares its model's name: the instance, with its state, is the
        one listed). File paths only for an ``admin`` caller."""
        from corral import presets
        from corral.store import models as model_table

        out, running_paths, running_presets = [], set(), set()
        for rec in self.supervisor.list():
            out.append(
                {
                    "id": rec.name,
                    "object": "model",
                    "owned_by": "corral",
                    "kind": "instance",
                    "state": rec.state,
                    "model_path": rec.model,
                    "aliases": rec.aliases,
                }
            )
            if rec.desired == "running" and State(rec.state) in LIVE:
                running_paths.add(rec.model)
                if rec.preset:
                    running_presets.add(rec.preset)
        for p in presets.list_all(self.supervisor.store):
            if p.name == "*":
                continue
            out.append(
                {
                    "id": p.name,
                    "object": "model",
                    "owned_by": "corral",
                    "kind": "preset",
                    "state": "running" if p.name in running_presets else "stopped",
                    "aliases": p.aliases,
                }
            )
        for m in model_table.list_all(self.supervisor.store):
            out.append(
                {
                    "id": m.name,
                    "object": "model",
                    "owned_by": "corral",
                    "kind": "model",
                    "state": "running" if m.path in running_paths else "stopped",
                    "model_path": m.path,
                }
            )
        return _once(out, admin)

    def sole_instance(self) -> str:
        """The name a request without ``model`` means: the only live instance. UsageError
        (400) listing the names a request may use when there is not exactly one."""
        live = [
            r.name
            for r in self.supervisor.list()
            if r.desired == "running" and State(r.state) in LIVE
        ]
        if len(live) == 1:
            return live[0]
        names = [m["id"] for m in self.models()]
        shown = ", ".join(names[:MODEL_NAMES_SHOWN]) + (
            ", ..." if len(names) > MODEL_NAMES_SHOWN else ""
        )
        why = f"{len(live)} instances are running" if live else "no instance is running"
        raise UsageError(
            f'request body needs a "model": {why}; '
            + (f"use one of: {shown}" if names else "nothing is indexed yet (corral pull)")
        )

    def usage(self) -> dict:
        """Counters per instance and summed per model label."""
        per_model: dict[str, Usage] = {}
        for name, u in self._usage.items():
            label = self._labels.get(name, name)
            m = per_model.setdefault(label, Usage())
            m.requests += u.requests
            m.errors += u.errors
            m.tokens_in += u.tokens_in
            m.tokens_out += u.tokens_out
            m.in_flight += u.in_flight
            if u.last_used_at and (m.last_used_at or 0) < u.last_used_at:
                m.last_used_at, m.tokens_per_second = u.last_used_at, u.tokens_per_second
        return {
            "instances": {k: v.to_dict() for k, v in self._usage.items()},
            "models": {k: v.to_dict() for k, v in per_model.items()},
        }

    # -- forwarding ------------------------------------------------------------------------
    def upstream_key(self, rec) -> str | None:
        """The key to call ``rec`` with, if it was launched to require one.

        llama-server accepts every key from ``--api-key`` (a CSV row), ``LLAMA_API_KEY``,
        and the lines of ``--api-key-file`` / ``LLAMA_ARG_API_KEY_FILE``: any one will do,
        so inline keys come first (no I/O). A key file is read at route time (the key may
        have been rotated) and cached by mtime and size; a file that cannot be read or
        holds no key is an :class:`UpstreamKeyError` (502) naming the instance.
        """
        env = rec.env or {}
        files = []
        for flag, value in rec.flags:
            if flag == "--api-key" and value:
                key = first_api_key(value)
                if key:
                    return self._usable(rec.name, key, "--api-key")
            elif flag == "--api-key-file" and value:
                files.append(value)
        inline = env.get("LLAMA_API_KEY", os.environ.get("LLAMA_API_KEY"))
        if inline and (key := first_api_key(inline)):
            return self._usable(rec.name, key, "LLAMA_API_KEY")
        from_env = env.get("LLAMA_ARG_API_KEY_FILE", os.environ.get("LLAMA_ARG_API_KEY_FILE"))
        if from_env:
            files.append(from_env)
        return self._key_from_file(rec.name, files[0]) if files else None

    @staticmethod
    def _usable(instance: str, key: str, where: str) -> str:
        if any(c in key for c in "\r\n\0"):  # would break (or forge) the request's headers
            raise UpstreamKeyError(
                f"instance {instance!r}: the API key in {where} holds a "
                "line break or NUL, which no HTTP header can carry"
            )
        return key

    def _key_from_file(self, instance: str, path: str) -> str:
        try:
            st = os.stat(path)
            cached = self._key_files.get(path)
            if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
                return cached[2]
            with open(path, encoding="utf-8") as f:
                key = first_key_line(f.read(64 * 1024))
        except (OSError, UnicodeDecodeError) as exc:
            self._key_files.pop(path, None)
            raise UpstreamKeyError(
                f"instance {instance!r} wants the API key in {path}, which "
                f"cannot be read: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        if key is None:
            raise UpstreamKeyError(
                f"instance {instance!r} wants the API key in {path}, which holds no key line"
            )
        key = self._usable(instance, key, path)
        self._key_files[path] = (st.st_mtime_ns, st.st_size, key)
        return key

    def begin(self, rec, label: str) -> Usage:
        """Count a request as in flight on ``rec`` (call ``end`` exactly once after)."""
        u = self._usage.get(rec.name)
        if u is None:
            u = self._usage[rec.name] = Usage()
        self._labels[rec.name] = label
        u.in_flight += 1
        return u

    def end(
        self,
        rec,
        label: str,
        u: Usage,
        *,
        status: int,
        ttft: float | None,
        elapsed: float,
        tail: bytes | None,
        endpoint: str,
        head: bytes | None = None,
    ) -> None:
        """Record a finished request: counters, tokens from usage/timings, metrics.

        ``head`` is the answer's first read: an Anthropic stream states its input tokens
        in its first event only, which a long stream's tail no longer holds."""
        u.in_flight -= 1
        u.requests += 1
        u.last_used_at = time.time()
        self._last_used[rec.name] = time.monotonic()
        error = status >= 400 and status != CLIENT_GONE
        if error:
            u.errors += 1
        key = (label, rec.name, endpoint, status)
        series = self._series.get(key)
        if series is None:  # labels() costs a lock and a dict walk: once per combination
            m = self.metrics
            series = self._series[key] = (
                m.requests.labels(label, rec.name, endpoint, str(status)),
                m.errors.labels(label, rec.name),
                m.latency.labels(label),
                m.ttft.labels(label),
                m.tokens_in.labels(label),
                m.tokens_out.labels(label),
                m.tokens_per_second.labels(label, rec.name),
            )
        requests, errors, latency, ttft_h, tokens_in, tokens_out, tps_g = series
        requests.inc()
        if error:
            errors.inc()
        latency.observe(elapsed)
        if ttft is not None:
            ttft_h.observe(ttft)
        if not tail:
            return
        found = usage_from(tail)
        if found is None:
            return
        tin, tout, tps = found
        if not tin and head:
            tin = input_tokens_from(head[:USAGE_TAIL])
        u.tokens_in += tin
        u.tokens_out += tout
        tokens_in.inc(tin)
        tokens_out.inc(tout)
        if tps:
            u.tokens_per_second = tps
            tps_g.set(tps)


def pull_error(model: str, message: str | None, code: str | None) -> CorralError:
    """The error of a pull that did not end ``done`` (here or on a node), by its code."""
    from corral.errors import UpstreamError, by_code

    text = f"pulling {model!r} failed: {message or 'cancelled'}"
    try:
        return by_code().get(code or "", UpstreamError)(text)
    except TypeError:  # a class that takes more than a message
        return UpstreamError(text)


def _once(entries: list[dict], admin: bool) -> list[dict]:
    """``entries`` with each id once (the first wins: instances come first), without
    ``model_path`` unless for an admin."""
    seen: set[str] = set()
    out = []
    for entry in entries:
        if entry["id"] in seen:
            continue
        seen.add(entry["id"])
        if not admin:
            entry.pop("model_path", None)
        out.append(entry)
    return out


def _file_bytes(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def _held_on(rec, device_id: str) -> int:
    """Bytes ``rec``'s memory plan puts on ``device_id`` (0 when it was not planned)."""
    for use in (getattr(rec, "placement", None) or {}).get("devices", ()):
        if use.get("id") == device_id:
            return int(use.get("used_bytes") or 0)
    return 0


def _host_bytes(rec) -> int:
    """Host RAM a router instance counts against ``router_memory_budget``: what its plan
    puts on the host, or (not planned) its model file's size."""
    placement = getattr(rec, "placement", None)
    if placement and any(d.get("kind") == "host" for d in placement.get("devices", ())):
        return sum(
            int(d.get("used_bytes") or 0) for d in placement["devices"] if d.get("kind") == "host"
        )
    return _file_bytes(rec.model)  # a resolved path already: stat it, no lookup


def _keep_reason(rec, usage: dict) -> str:
    """Why eviction leaves ``rec`` alone."""
    if rec.origin != "router":
        return "launched by a user"
    if rec.pinned:
        return "pinned"
    if State(rec.state) is State.STARTING:
        return "loading"
    if (usage.get(rec.name) or Usage()).in_flight:
        return "busy"
    return "already evicted"


def usage_from(data: bytes) -> tuple[int, int, float | None] | None:
    """(prompt tokens, completion tokens, generation tok/s) from a response, if it says.

    llama-server reports ``timings`` (prompt_n, predicted_n, predicted_per_second) and
    OpenAI-style ``usage``; a stream carries them in its last events.
    """
    # The objects are found with rfind and decoded alone (a small window), never the
    # whole response: an embeddings body can be megabytes, and this runs on the loop.
    objs = []
    for marker in (b'"timings"', b'"usage"'):
        value = _object_after(data, marker)
        if value is not None:
            objs.append({marker.strip(b'"').decode(): value})
    tin = tout = 0
    tps = None
    seen = False
    for obj in objs:
        if not isinstance(obj, dict):
            continue
        timings = obj.get("timings")
        usage = obj.get("usage")
        if isinstance(timings, dict):
            seen = True
            tps = _num(timings.get("predicted_per_second")) or tps
            tin = tin or int(_num(timings.get("prompt_n")) or 0)
            tout = tout or int(_num(timings.get("predicted_n")) or 0)
        if isinstance(usage, dict):  # OpenAI's names, or Anthropic's and Responses'
            seen = True
            tin = (
                int(_num(usage.get("prompt_tokens")) or _num(usage.get("input_tokens")) or 0) or tin
            )
            tout = (
                int(_num(usage.get("completion_tokens")) or _num(usage.get("output_tokens")) or 0)
                or tout
            )
    return (tin, tout, tps) if seen else None


def input_tokens_from(head: bytes) -> int:
    """The input tokens an answer's first ``usage`` states (0 if none): Anthropic's
    ``message_start`` event, the only one of its stream that says them."""
    usage = _object_after(head, b'"usage"', first=True) or {}
    return int(_num(usage.get("input_tokens")) or _num(usage.get("prompt_tokens")) or 0)


_DECODER = json.JSONDecoder()


def _object_after(data: bytes, marker: bytes, first: bool = False) -> dict | None:
    """The JSON object that is the value of the last (or ``first``) ``marker`` key in
    ``data``, if any."""
    at = data.find(marker) if first else data.rfind(marker)
    if at < 0:
        return None
    window = data[at + len(marker) : at + len(marker) + 8192].decode("utf-8", "replace")
    rest = window.lstrip()
    if not rest.startswith(":"):
        return None
    rest = rest[1:].lstrip()
    try:
        value, _ = _DECODER.raw_decode(rest)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def parse_request(body: bytes) -> tuple[str, bool]:
    """(model, stream) of an OpenAI request body, or a CorralError with the reason."""
    try:
        data = json.loads(body)
    except ValueError:
        raise UsageError("request body is not valid JSON")
    if not isinstance(data, dict):
        raise UsageError("request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise UsageError('request body needs a "model" (see GET /v1/models)')
    return model, data.get("stream") is True
