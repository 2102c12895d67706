"""The ``rpc_servers`` table: llama.cpp ``rpc-server`` processes corral runs on this machine.

A row is written before the process is spawned and on every change after, so a daemon
killed at any moment finds each server's pid, start time, address and command line when
it comes back (the same adoption identity as an instance's, :mod:`corral.supervisor.process`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field

from corral.errors import Conflict, NotFound
from corral.store.db import Store
from corral.store.rows import encode_json, update_by_name
from corral.types import DEFAULT_RESTART


@dataclass
class RpcRecord:
    """One rpc-server as stored. ``argv`` is exactly what was spawned (used to re-adopt)."""

    name: str
    binary: str
    host: str
    port: int
    devices: list[str] = field(default_factory=list)
    threads: int | None = None
    cache: int = 1
    argv: list[str] = field(default_factory=list)
    restart_policy: str = DEFAULT_RESTART
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

    @property
    def endpoint(self) -> str:
        """``host:port`` as llama-server's ``--rpc`` takes it."""
        return f"{self.host}:{self.port}"

    def to_dict(self) -> dict:
        """The API's and ``rpc ls --json``'s view: every column plus the endpoint."""
        return {**asdict(self), "cache": bool(self.cache), "endpoint": self.endpoint}


_JSON_COLUMNS = ("devices", "argv")
_COLUMNS = tuple(RpcRecord.__dataclass_fields__)


def _from_row(row) -> RpcRecord:
    data = dict(row)
    for col in _JSON_COLUMNS:
        data[col] = json.loads(data[col] or "[]")
    return RpcRecord(**data)


def insert(store: Store, rec: RpcRecord) -> RpcRecord:
    """Add ``rec``; a taken name or address is a Conflict."""
    now = time.time()
    rec.created_at = rec.created_at or now
    rec.updated_at = now
    data = encode_json(asdict(rec), _JSON_COLUMNS)
    cols = ", ".join(_COLUMNS)
    marks = ", ".join(f":{c}" for c in _COLUMNS)
    try:
        with store.tx() as conn:
            conn.execute(f"INSERT INTO rpc_servers ({cols}) VALUES ({marks})", data)
    except sqlite3.IntegrityError:
        raise Conflict(
            f"an rpc-server named {rec.name!r} or on {rec.endpoint} exists already (corral rpc ls)"
        ) from None
    return rec


def update(store: Store, name: str, **changes) -> None:
    """Update some columns of one server (unknown names are a programming error)."""
    update_by_name(store, "rpc_servers", name, changes, _COLUMNS, _JSON_COLUMNS, "rpc_servers")


def get(store: Store, name: str) -> RpcRecord:
    """The server ``name``; NotFound when there is none."""
    rows = store.query("SELECT * FROM rpc_servers WHERE name = ?", (name,))
    if not rows:
        raise NotFound(f"no rpc-server named {name!r} (corral rpc ls)")
    return _from_row(rows[0])


def list_all(store: Store) -> list[RpcRecord]:
    """Every server, by name."""
    return [_from_row(r) for r in store.query("SELECT * FROM rpc_servers ORDER BY name")]


def delete(store: Store, name: str) -> None:
    with store.tx() as conn:
        conn.execute("DELETE FROM rpc_servers WHERE name = ?", (name,))
