"""The ``instances`` table: every llama-server corral launched, live or not."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from corral.errors import Conflict, NotFound
from corral.redact import redact_argv, redact_env, redact_pairs
from corral.store.db import Store
from corral.store.rows import encode_json, update_by_name
from corral.types import DEFAULT_RESTART

FlagPairs = list[list]  # [[flag, value | None], ...] (JSON friendly)


@dataclass
class InstanceRecord:
    """One persisted instance. ``argv`` is exactly what was spawned (used to re-adopt)."""

    name: str
    model: str
    binary: str
    port: int
    flags: FlagPairs = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    build_id: int | None = None
    version: str | None = None
    restart_policy: str = DEFAULT_RESTART
    desired: str = "running"
    state: str = "stopped"
    pid: int | None = None
    create_time: float | None = None
    restarts: int = 0
    exit_code: int | None = None
    last_error: str | None = None
    started_at: float | None = None
    ready_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    env: dict = field(default_factory=dict)
    preset: str | None = None
    origin: str = "user"
    pinned: int = 0
    idle_ttl: float | None = None
    aliases: list[str] = field(default_factory=list)
    #: The memory plan it was launched with (devices and bytes per device, flags added,
    #: notes) and, once loaded, what llama-server reported (``real``); None: not planned.
    placement: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


_JSON_COLUMNS = ("flags", "argv", "env", "aliases", "placement")
_COLUMNS = tuple(InstanceRecord.__dataclass_fields__)


def _from_row(row) -> InstanceRecord:
    data = dict(row)
    for col in _JSON_COLUMNS:
        data[col] = json.loads(data[col])
    return InstanceRecord(**data)


def insert(store: Store, rec: InstanceRecord) -> InstanceRecord:
    """Insert a new instance; a taken name or port is a Conflict."""
    now = time.time()
    rec.created_at = rec.created_at or now
    rec.updated_at = now
    values = encode_json({c: getattr(rec, c) for c in _COLUMNS}, _JSON_COLUMNS)
    with store.tx() as conn:
        if conn.execute("SELECT 1 FROM instances WHERE name = ?", (rec.name,)).fetchone():
            raise Conflict(f"an instance named {rec.name!r} already exists")
        other = conn.execute("SELECT name FROM instances WHERE port = ?", (rec.port,)).fetchone()
        if other:
            raise Conflict(f"port {rec.port} is already assigned to instance {other[0]!r}")
        cols = ", ".join(_COLUMNS)
        marks = ", ".join(f":{c}" for c in _COLUMNS)
        conn.execute(f"INSERT INTO instances ({cols}) VALUES ({marks})", values)
    return rec


def update(store: Store, name: str, **changes) -> None:
    """Update some columns of one instance (unknown names are a programming error)."""
    if not changes:
        return
    update_by_name(store, "instances", name, changes, _COLUMNS, _JSON_COLUMNS, "instance")


def get(store: Store, name: str) -> InstanceRecord:
    rows = store.query("SELECT * FROM instances WHERE name = ?", (name,))
    if not rows:
        raise NotFound(f"no instance named {name!r}")
    return _from_row(rows[0])


def find(store: Store, name: str) -> InstanceRecord | None:
    rows = store.query("SELECT * FROM instances WHERE name = ?", (name,))
    return _from_row(rows[0]) if rows else None


def list_all(store: Store) -> list[InstanceRecord]:
    return [_from_row(r) for r in store.query("SELECT * FROM instances ORDER BY created_at, name")]


def delete(store: Store, name: str) -> None:
    with store.tx() as conn:
        conn.execute("DELETE FROM instances WHERE name = ?", (name,))


def used_ports(store: Store) -> set[int]:
    return {r[0] for r in store.query("SELECT port FROM instances")}


def view(rec: InstanceRecord) -> dict:
    """The public shape of an instance (API and ``ps --json``).

    Secrets in its flags and env (``--api-key K``, ``LLAMA_API_KEY``) show as ``***``;
    the record keeps them, since the router calls the instance with its key.
    """
    return {
        "name": rec.name,
        "state": rec.state,
        "desired": rec.desired,
        "pid": rec.pid,
        "host": rec.host,
        "port": rec.port,
        "url": f"http://{'127.0.0.1' if rec.host in ('0.0.0.0', '::') else rec.host}:{rec.port}",
        "model": rec.model,
        "build": rec.build_id,
        "version": rec.version,
        "binary": rec.binary,
        "flags": [f if v is None else f"{f} {v}" for f, v in redact_pairs(rec.flags)],
        "argv": redact_argv(rec.argv),
        "restart_policy": rec.restart_policy,
        "restarts": rec.restarts,
        "exit_code": rec.exit_code,
        "last_error": rec.last_error,
        "started_at": rec.started_at,
        "ready_at": rec.ready_at,
        "created_at": rec.created_at,
        "env": redact_env(rec.env),
        "preset": rec.preset,
        "origin": rec.origin,
        "pinned": bool(rec.pinned),
        "idle_ttl": rec.idle_ttl,
        "aliases": rec.aliases,
        "placement": rec.placement,
    }
