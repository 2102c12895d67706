"""The ``builds`` table: llama-server binaries corral knows about."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from corral.errors import NotFound
from corral.store.db import Store


@dataclass
class BuildRecord:
    id: int
    path: str
    version: str | None
    backend: str
    origin: str
    is_default: bool
    added_at: float
    build: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _from_row(row) -> BuildRecord:
    data = dict(row)
    data["is_default"] = bool(data["is_default"])
    return BuildRecord(**data)


def add(
    store: Store,
    path: str,
    version: str | None,
    backend: str = "unknown",
    origin: str = "added",
    build: str | None = None,
) -> BuildRecord:
    """Register a binary (idempotent on path); the first build becomes the default."""
    with store.tx() as conn:
        has_default = conn.execute("SELECT 1 FROM builds WHERE is_default = 1").fetchone()
        conn.execute(
            "INSERT INTO builds (path, version, backend, origin, is_default, added_at, build) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
            "version = excluded.version, backend = excluded.backend, build = excluded.build",
            (path, version, backend, origin, 0 if has_default else 1, time.time(), build),
        )
    return get_by_path(store, path)


def remove(store: Store, build_id: int) -> BuildRecord:
    """Forget a build; if it was the default, the newest remaining one becomes default."""
    rec = get(store, build_id)
    with store.tx() as conn:
        conn.execute("DELETE FROM builds WHERE id = ?", (build_id,))
        if rec.is_default:
            conn.execute(
                "UPDATE builds SET is_default = 1 WHERE id = "
                "(SELECT id FROM builds ORDER BY added_at DESC LIMIT 1)"
            )
    return rec


def get_by_path(store: Store, path: str) -> BuildRecord:
    rows = store.query("SELECT * FROM builds WHERE path = ?", (path,))
    if not rows:
        raise NotFound(f"no build registered at {path}")
    return _from_row(rows[0])


def get(store: Store, build_id: int) -> BuildRecord:
    rows = store.query("SELECT * FROM builds WHERE id = ?", (build_id,))
    if not rows:
        raise NotFound(f"no build with id {build_id}")
    return _from_row(rows[0])


def list_all(store: Store) -> list[BuildRecord]:
    return [_from_row(r) for r in store.query("SELECT * FROM builds ORDER BY id")]


def default(store: Store) -> BuildRecord | None:
    rows = store.query("SELECT * FROM builds WHERE is_default = 1 LIMIT 1")
    return _from_row(rows[0]) if rows else None


def set_default(store: Store, build_id: int) -> None:
    get(store, build_id)
    with store.tx() as conn:
        conn.execute("UPDATE builds SET is_default = (id = ?)", (build_id,))
