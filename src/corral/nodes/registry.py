"""The controller's linked nodes: add, remove, list, and one poll loop per node.

:class:`NodeRegistry` lives in the daemon (started and closed by its lifespan). Each node
has a :class:`~corral.nodes.remote.RemoteNode` (one keep-alive client), a
:class:`~corral.nodes.health.Health` (misses, state, backoff) and one asyncio task that
polls it every ``node_poll_interval`` seconds (each poll bounded by its timeout).
Nothing local ever waits for a node: ``views()`` answers from memory, and the only
request that calls a node is ``POST /api/v1/nodes`` itself (the check before storing).

A state change (``unknown``/``up``/``down``) is published on :attr:`NodeRegistry.events`
as ``{"node", "state", "previous", "error", "at"}``. ``last_seen`` is written to the
store when the state changes and otherwise at most every ``SEEN_GRANULARITY`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from corral.errors import Conflict, CorralError, NotFound, UpstreamError, UsageError
from corral.events import Broadcaster
from corral.nodes.fleet import catalog_of
from corral.nodes.health import Health, poll_timeout
from corral.nodes.remote import RemoteNode, check_url
from corral.store import nodes as table
from corral.store.db import Store
from corral.store.nodes import NodeRow
from corral.types import check_name

log = logging.getLogger("corral.nodes")

#: Seconds between two writes of an up node's last_seen (a write per poll is not needed).
SEEN_GRANULARITY = 60.0
#: The shortest poll interval taken, whatever the setting says (0 would spin).
MIN_INTERVAL = 0.05
#: The longest key accepted (corral's own are 47 characters).
KEY_MAX = 512


def check_key(value: object) -> str:
    """``value`` as a node key: printable, no spaces, 1..KEY_MAX characters. The message
    never repeats the value."""
    if not isinstance(value, str) or not 0 < len(value) <= KEY_MAX:
        raise UsageError(f"a node key is 1-{KEY_MAX} characters (from `corral keys create`)")
    if not value.isprintable() or not value.isascii() or any(c.isspace() for c in value):
        raise UsageError("a node key may hold neither spaces nor control characters")
    return value


@dataclass
class Tracked:
    """One node in memory: its row, connection, health, last summary and poll task."""

    row: NodeRow
    remote: RemoteNode
    health: Health
    summary: dict[str, Any] = field(default_factory=dict)
    task: asyncio.Task | None = None
    stamped: float = 0.0
    catalog: dict[str, bool] = field(default_factory=dict)  # name -> serving now
    kinds: dict[str, str] = field(default_factory=dict)  # name -> instance|preset|model
    models: list[dict] = field(default_factory=list)  # the node's /v1/models entries

    def learn(self, summary: dict[str, Any]) -> None:
        """Keep a poll's summary, and what the node serves (for routing)."""
        self.summary = summary
        self.models = summary.get("served") or []
        self.catalog = catalog_of({"data": self.models})
        self.kinds = {}
        for entry in self.models:
            for name in [entry["id"], *entry.get("aliases", ())]:
                self.kinds.setdefault(name, entry.get("kind") or "model")

    def view(self) -> dict:
        """What ``GET /api/v1/nodes`` answers for it: never the key."""
        h = self.health
        last_seen = h.last_seen if h.last_seen is not None else self.row.last_seen
        return {
            **self.row.to_dict(),
            "state": h.state,
            "last_seen": last_seen,
            "misses": h.misses,
            "error": h.last_error,
            "corral_version": self.summary.get("corral_version"),
            "llama_cpp_version": self.summary.get("llama_cpp_version"),
            "gpus": self.summary.get("gpus", []),
            "ram_free": self.summary.get("ram_free"),
            "instances": self.summary.get("instances"),
            "instances_ready": self.summary.get("instances_ready"),
            "models": self.summary.get("models"),
        }


class NodeRegistry:
    """Every linked node of this daemon, each polled by its own task.

    ``interval`` is read on every poll (a callable, so a changed setting counts);
    ``clock`` is wall time for the records, ``sleep`` the loop's wait: both injectable."""

    def __init__(
        self,
        store: Store,
        interval: Callable[[], float],
        *,
        clock: Callable[[], float] = time.time,
        transport=None,
    ) -> None:
        self.store = store
        self._interval = interval
        self.clock = clock
        self.transport = transport  # an httpx transport for tests; None = the network
        self.events = Broadcaster()
        self._nodes: dict[str, Tracked] = {}
        #: Called with (node, its catalog) after each answered poll (the fleet's hook).
        self.on_poll: Callable[[str, dict[str, bool]], None] | None = None

    def interval(self) -> float:
        """Seconds between two polls of a node (the setting, at least ``MIN_INTERVAL``)."""
        return max(MIN_INTERVAL, float(self._interval()))

    # -- life ------------------------------------------------------------------------

    def start(self) -> None:
        """Track every stored node (state ``unknown`` until its first poll)."""
        for row in table.list_all(self.store):
            self._track(row, Health(self.interval()))

    async def close(self) -> None:
        for name in list(self._nodes):
            await self._untrack(name)

    def _remote(self, name: str, url: str, key: str) -> RemoteNode:
        timeout = poll_timeout(self.interval())
        return RemoteNode(name, url, key, timeout=timeout, transport=self.transport)

    def _track(self, row: NodeRow, health: Health, summary: dict | None = None) -> Tracked:
        tracked = Tracked(row, self._remote(row.name, row.url, row.key), health)
        tracked.learn(summary or {})
        self._nodes[row.name] = tracked
        tracked.task = asyncio.get_running_loop().create_task(
            self._loop(tracked), name=f"corral-node-{row.name}"
        )
        return tracked

    async def _untrack(self, name: str) -> None:
        tracked = self._nodes.pop(name, None)
        if tracked is None:
            return
        if tracked.task is not None:
            tracked.task.cancel()
            try:
                await tracked.task
            except asyncio.CancelledError:
                pass
        await tracked.remote.close()

    # -- the API's calls -------------------------------------------------------------

    def tracked(self) -> list[Tracked]:
        """Every linked node in memory (the routing's view: :mod:`corral.nodes.fleet`)."""
        return list(self._nodes.values())

    def find(self, name: str) -> Tracked | None:
        return self._nodes.get(name)

    def views(self) -> list[dict]:
        return [self._nodes[name].view() for name in sorted(self._nodes)]

    def get(self, name: str) -> dict:
        tracked = self._nodes.get(name)
        if tracked is None:
            raise NotFound(f"no node {name!r} (see `corral nodes ls`)")
        return tracked.view()

    async def instances(self, timeout: float = 3.0) -> dict:
        """Every node's instances, asked now of all nodes at once (``corral ps``): rows
        with ``node`` set, and per node that did not answer within ``timeout`` (a down
        node is not asked) why not. A slow node costs at most ``timeout``."""
        names = sorted(self._nodes)

        async def one(name: str) -> list:
            tracked = self._nodes[name]
            if tracked.health.state == "down":
                raise UpstreamError(f"node {name} is down ({tracked.health.last_error})")
            rows = await asyncio.wait_for(tracked.remote.get("/api/v1/instances"), timeout)
            if not isinstance(rows, list):
                raise UpstreamError(f"node {name} answered no instance list")
            return [{**r, "node": name} for r in rows if isinstance(r, dict)]

        answers = await asyncio.gather(*(one(n) for n in names), return_exceptions=True)
        out: dict = {"instances": [], "unreachable": {}}
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, asyncio.TimeoutError):
                out["unreachable"][name] = f"node {name} did not answer in {timeout:g} s"
            elif isinstance(answer, CorralError):
                out["unreachable"][name] = answer.message
            elif isinstance(answer, BaseException):
                raise answer
            else:
                out["instances"] += answer
        return out

    def remote(self, name: str) -> RemoteNode:
        """The connection to a linked node (NotFound for another name)."""
        tracked = self._nodes.get(name)
        if tracked is None:
            raise NotFound(f"no node {name!r} (see `corral nodes ls`)")
        return tracked.remote

    async def add(self, name: str, url: str, key: str) -> dict:
        """Check ``name``, ``url`` and ``key``, call the node once with the key, and store
        it only when it answered as a corral daemon that takes the key as admin."""
        name = check_name(name, "node name")
        url = check_url(url)
        key = check_key(key)
        if name in self._nodes or table.get(self.store, name) is not None:
            raise Conflict(f"a node named {name!r} exists already (corral nodes rm it first)")
        probe = self._remote(name, url, key)
        try:
            summary = await probe.poll()
        finally:
            await probe.close()
        now = self.clock()
        row = NodeRow(name, url, key, added_at=now, last_seen=now)
        table.insert(self.store, row)
        health = Health(self.interval())
        health.answered(now)
        log.info("node %s (%s) added: corral %s", name, url, summary.get("corral_version"))
        tracked = self._track(row, health, summary)
        tracked.stamped = now
        self._publish(name, "up", "unknown", None, now)
        return tracked.view()

    async def remove(self, name: str) -> dict:
        """Forget the node ``name`` (its own daemon and instances are not touched)."""
        view = self.get(name) if name in self._nodes else None
        if not table.delete(self.store, name) and view is None:
            raise NotFound(f"no node {name!r} (see `corral nodes ls`)")
        await self._untrack(name)
        log.info("node %s removed", name)
        return view or {"name": name}

    # -- polling ---------------------------------------------------------------------

    async def _loop(self, tracked: Tracked) -> None:
        """Poll ``tracked`` until cancelled; one failing poll never ends the loop."""
        while True:
            delay = tracked.health.next_at - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self.poll_once(tracked)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug in one poll must not stop the node's loop
                log.exception("polling node %s failed", tracked.row.name)
                tracked.health.next_at = self.clock() + tracked.health.interval

    async def poll_once(self, tracked: Tracked) -> None:
        """One poll: the health is told the outcome; a change is published and stamped."""
        health = tracked.health
        health.interval = self.interval()
        started = self.clock()
        previous = health.state
        try:
            tracked.learn(await tracked.remote.poll())
            if self.on_poll is not None:
                self.on_poll(tracked.row.name, tracked.catalog)
        except CorralError as exc:
            changed = health.missed(started, exc.message)
        else:
            changed = health.answered(started)
        if changed is not None:
            if changed == "down":
                log.warning("node %s is down: %s", tracked.row.name, health.last_error)
            else:
                log.info("node %s is %s", tracked.row.name, changed)
            self._publish(tracked.row.name, changed, previous, health.last_error, started)
        seen = health.last_seen
        if seen is not None and (changed or seen - tracked.stamped >= SEEN_GRANULARITY):
            self._stamp(tracked, seen)

    def _stamp(self, tracked: Tracked, at: float) -> None:
        try:
            table.stamp_seen(self.store, tracked.row.name, at)
            tracked.stamped = at
        except CorralError as exc:  # the store is unwell: the next poll tries again
            log.warning("could not record node %s as seen: %s", tracked.row.name, exc.message)

    def _publish(self, name: str, state: str, previous: str, error: str | None, at: float):
        self.events.publish(
            {"node": name, "state": state, "previous": previous, "error": error, "at": at}
        )
