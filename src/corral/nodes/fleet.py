"""Where a model runs, or can run, among the linked nodes: the controller's ``/v1/*``
routing across machines.

The controller's relay (:mod:`corral.api.openai`) asks this daemon first: a model with a
ready instance here is served here, without a hop. Otherwise :class:`Fleet` says which
nodes to try, best first, from what the polls learnt (each poll reads the node's own
``/v1/models``: every name it serves, and which run now) and from where this controller
sent the model last (a model placed on a node is served there until the node fails,
goes down, or a later poll shows it stopped there):

1. a node where it runs now (placed there, or seen running by the last poll);
2. else a node that has it (its file in the index, a preset, a stopped instance), best
   first by :func:`rank`: one whose planner says it fits (the node's ``POST
   /api/v1/fit``, asked when the model is first placed), then the fewest instances;
   this daemon is one of the candidates when it has the model too (``node=None``);
3. else, when ``router_pull_missing`` is on, the caller is an admin and the name is a
   Hub reference, the node (or this daemon) with the most free memory (the GPUs', else
   RAM) pulls it first (the node's ``POST /api/v1/pulls``, waited for).

The request goes to the node's own ``/v1/*`` path with the node's key, marked with
:data:`HOP_HEADER`, so the node serves it from its own instances (and its own router
starts the model on demand) and never sends it on to its own nodes: one hop at most.
The caller's scope goes with it (:data:`SCOPE_HEADER`): an inference key here is an
inference caller there, although the controller holds the node's admin key.

Nothing here waits on a node except a fit check (bounded by :data:`FIT_TIMEOUT`, once
per model and node until the model is placed); a node that cannot be reached is
skipped and the next is tried (the relay does that before any byte goes to the
client). Everything is answered from memory; the ranking is pure (:func:`rank`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from corral.errors import CorralError

log = logging.getLogger("corral.nodes.fleet")

#: Marks a request relayed by a controller: the node serves it itself (never a 2nd hop).
HOP_HEADER = b"x-corral-hop"
#: The scope a relayed request's caller had at the controller (only ever lowers it).
SCOPE_HEADER = b"x-corral-scope"
#: Seconds a fit check on a node may take before it counts as "unknown".
FIT_TIMEOUT = 3.0
#: Seconds a node's fit answer is reused for the same model.
FIT_TTL = 60.0
#: Seconds between two looks at a node's pull.
PULL_POLL = 0.5
#: Instance states (a node's ``/v1/models`` ``state``) that serve now or soon.
SERVING = frozenset({"ready", "running", "starting", "unhealthy", "backoff"})


@dataclass(frozen=True, slots=True)
class Candidate:
    """One place a model may be served: a node (``None``: this daemon)."""

    node: str | None
    running: bool  # an instance of it serves (or loads) there now
    fits: bool | None  # its planner's word (None: not asked, or no answer)
    instances: int  # instances that node runs


def rank(candidates: list[Candidate]) -> list[Candidate]:
    """Best first: running there; then fits (yes, unknown, no); then the fewest
    instances; then this daemon before a node (no hop), then by name."""
    fit_order = {True: 0, None: 1, False: 2}
    return sorted(
        candidates,
        key=lambda c: (not c.running, fit_order[c.fits], c.instances, c.node is not None, c.node),
    )


@dataclass(frozen=True, slots=True)
class Hop:
    """How to reach one node's ``/v1/*``: what the relay's connection pool needs."""

    node: str
    name: str  # "model@node": what usage counters and messages call it
    label: str  # the model, as the request named it
    host: str
    port: int
    tls: ssl.SSLContext | None
    authorization: bytes  # b"Bearer <key>": never logged, never in a message
    source: object = None  # the node's row it was made from (a re-added node: new key)

    def __repr__(self) -> str:
        return f"Hop({self.node!r}, {self.host}:{self.port})"


def catalog_of(models: Any) -> dict[str, bool]:
    """name -> serving now, from a node's ``/v1/models`` answer (ids and aliases)."""
    out: dict[str, bool] = {}
    data = models.get("data") if isinstance(models, dict) else None
    for entry in data if isinstance(data, list) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        serving = entry.get("state") in SERVING
        names = [entry["id"]] + [a for a in entry.get("aliases") or () if isinstance(a, str)]
        for name in names:
            out[name] = out.get(name, False) or serving
    return out


def hop_of(node: str, url: str, key: str, model: str, tls: ssl.SSLContext | None = None) -> Hop:
    """The :class:`Hop` to the node at ``url`` (checked when the node was added); an
    ``https`` node gets ``tls`` (a verifying default context when not given)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and tls is None:
        tls = ssl.create_default_context()
    elif parts.scheme != "https":
        tls = None
    port = parts.port or (443 if tls else 80)
    auth = f"Bearer {key}".encode()
    return Hop(node, f"{model}@{node}", model, parts.hostname or "", port, tls, auth)


class Fleet:
    """The linked nodes as places to serve models (see the module docstring).

    ``registry`` is the daemon's :class:`~corral.nodes.registry.NodeRegistry`;
    ``clock`` is monotonic time (injectable)."""

    def __init__(self, registry, clock=time.monotonic) -> None:
        self.registry = registry
        self.clock = clock
        self._placed: dict[str, str] = {}  # model -> node this controller sent it to
        self._fits: dict[tuple[str, str], tuple[float, bool | None]] = {}
        self._hops: dict[tuple[str, str], Hop] = {}
        self._tls: dict[str, ssl.SSLContext] = {}
        registry.on_poll = self.forget_stopped

    def __bool__(self) -> bool:  # no node linked: the relay never looks further
        return bool(self.registry.tracked())

    # -- what the polls learnt ------------------------------------------------------
    def _up(self):
        return [t for t in self.registry.tracked() if t.health.state != "down"]

    def placed(self, model: str) -> str | None:
        """The node this controller last sent ``model`` to, while it is not down."""
        node = self._placed.get(model)
        if node is None:
            return None
        tracked = self.registry.find(node)
        if tracked is None or tracked.health.state == "down":
            self._placed.pop(model, None)
            return None
        return node

    def place(self, model: str, node: str | None) -> None:
        """``model`` was served by ``node`` (None: this daemon, which forgets it)."""
        if node is None:
            self._placed.pop(model, None)
        elif self._placed.get(model) != node:
            if len(self._placed) >= 4096:
                self._placed.clear()
            self._placed[model] = node

    def failed(self, model: str, node: str) -> None:
        """``node`` could not be reached for ``model``: not its place any more."""
        if self._placed.get(model) == node:
            del self._placed[model]

    def forget_stopped(self, node: str, catalog: dict[str, bool]) -> None:
        """A poll of ``node`` saw ``catalog``: models placed there that no longer run
        there are placed afresh next time (an idle stop, a removal)."""
        for model in [m for m, n in self._placed.items() if n == node]:
            if not catalog.get(model, False):
                del self._placed[model]

    def listed(self, model: str) -> bool:
        """Whether a node that is not down lists ``model``."""
        return any(model in t.catalog for t in self._up())

    def down_having(self, model: str) -> list[str]:
        """The down nodes whose last poll listed ``model``."""
        return [
            t.row.name
            for t in self.registry.tracked()
            if t.health.state == "down" and model in t.catalog
        ]

    async def candidates(self, model: str, local: Candidate | None) -> list[Candidate]:
        """Where to serve ``model``, best first (see :func:`rank`); ``local`` is this
        daemon's own candidacy (None when it cannot serve the model)."""
        placed = self.placed(model)
        out = [local] if local is not None else []
        asking = []
        for tracked in self._up():
            catalog = tracked.catalog
            if model not in catalog:
                continue
            running = catalog[model] or tracked.row.name == placed
            asking.append((tracked, running))
        fits = await asyncio.gather(
            *(self._fit(t, model) if not running else _none() for t, running in asking)
        )
        for (tracked, running), fit in zip(asking, fits, strict=True):
            out.append(
                Candidate(
                    tracked.row.name, running, fit, int(tracked.summary.get("instances_ready") or 0)
                )
            )
        return rank(out)

    def pull_targets(self, here: tuple[int, int] | None) -> list[Candidate]:
        """Where a model nobody has may be pulled (``router_pull_missing``), best first:
        a place with free GPU memory before one without, the most free memory (the GPUs',
        else RAM), the fewest instances, then this daemon. ``here``: this daemon's free
        (GPU, RAM) bytes, None when it may not pull."""
        out: list[tuple[Candidate, int, int]] = []
        if here is not None:
            out.append((Candidate(None, False, None, 0), *here))
        for tracked in self._up():
            gpus = tracked.summary.get("gpus") or []
            vram = sum(int(g.get("vram_free") or 0) for g in gpus)
            ram = int(tracked.summary.get("ram_free") or 0)
            count = int(tracked.summary.get("instances_ready") or 0)
            out.append((Candidate(tracked.row.name, False, None, count), vram, ram))
        ranked = sorted(
            out, key=lambda p: (p[1] == 0, -(p[1] or p[2]), p[0].instances, p[0].node is not None)
        )
        return [c for c, _, _ in ranked]

    async def _fit(self, tracked, model: str) -> bool | None:
        """The node's planner on ``model`` (``POST /api/v1/fit``), cached FIT_TTL s."""
        key = (tracked.row.name, model)
        now = self.clock()
        cached = self._fits.get(key)
        if cached is not None and now - cached[0] < FIT_TTL:
            return cached[1]
        kind = tracked.kinds.get(model, "model")
        body = {"preset": model} if kind == "preset" else {"model": model}
        try:
            async with asyncio.timeout(FIT_TIMEOUT):
                plan = await tracked.remote.post("/api/v1/fit", body)
            fits = plan.get("fits") if isinstance(plan, dict) else None
            fits = fits if isinstance(fits, bool) else None
        except (CorralError, TimeoutError):
            fits = None  # not planned there (an instance, fit off, no answer): unknown
        if len(self._fits) >= 4096:
            self._fits.clear()
        self._fits[key] = (now, fits)
        return fits

    async def pull(self, node: str, model: str, timeout: float) -> dict:
        """Have ``node`` pull ``model`` from the Hub (its ``POST /api/v1/pulls``) and wait
        for the end, at most ``timeout`` seconds: the node's last view of the pull."""
        tracked = self.registry.find(node)
        if tracked is None:
            raise LookupError(node)
        job = await tracked.remote.post("/api/v1/pulls", {"ref": model})
        if not isinstance(job, dict) or "id" not in job:
            error = job.get("error") if isinstance(job, dict) else None
            return {"state": "failed", **(error if isinstance(error, dict) else {})}
        deadline = self.clock() + timeout
        while job.get("state") in ("queued", "running") and self.clock() < deadline:
            await asyncio.sleep(PULL_POLL)
            job = await tracked.remote.get(f"/api/v1/pulls/{job['id']}")
        return job

    def hop(self, node: str, model: str) -> Hop:
        """How to send ``model``'s request to ``node`` (made once per node and model)."""
        tracked = self.registry.find(node)
        if tracked is None:
            raise LookupError(node)
        key = (node, model)
        hop = self._hops.get(key)
        if hop is None or hop.source is not tracked.row:  # the node was re-added since
            if len(self._hops) >= 4096:
                self._hops.clear()
            tls = self._tls.get(node) if tracked.row.url.startswith("https:") else None
            hop = hop_of(node, tracked.row.url, tracked.row.key, model, tls)
            if hop.tls is not None:
                self._tls[node] = hop.tls  # loading the CA store costs milliseconds: once
            hop = self._hops[key] = replace(hop, source=tracked.row)
        return hop

    def entries(self) -> list[dict]:
        """Every name the up nodes serve, for the union ``/v1/models``: (node, entry)."""
        out = []
        for tracked in self._up():
            for entry in tracked.models:
                out.append((tracked.row.name, entry))
        return out


async def _none() -> None:
    return None
