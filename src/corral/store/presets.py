"""The ``presets`` table: one row a preset, its settings as a JSON ``spec``.

Rows go in and out as ``(name, spec)`` with ``spec`` a dict; :mod:`corral.presets`
turns them into :class:`~corral.presets.Preset` values and checks them.
"""

from __future__ import annotations

import json
import time
from typing import Callable

from corral.errors import NotFound
from corral.store.db import Store

Row = tuple[str, dict]


def get(store: Store, name: str) -> dict | None:
    """The spec of the preset called ``name``, or None."""
    rows = store.query("SELECT spec FROM presets WHERE name = ?", (name,))
    return json.loads(rows[0]["spec"]) if rows else None


def list_all(store: Store) -> list[Row]:
    """Every ``(name, spec)``, sorted by name."""
    rows = store.query("SELECT name, spec FROM presets ORDER BY name")
    return [(r["name"], json.loads(r["spec"])) for r in rows]


def write(store: Store, rows: list[Row], check: Callable[[dict[str, dict]], None]) -> None:
    """Create or replace ``rows`` in one transaction, after ``check({name: spec})`` of the
    stored presets has passed (it raises to write nothing)."""
    now = time.time()
    with store.tx() as conn:
        stored = {
            r["name"]: json.loads(r["spec"]) for r in conn.execute("SELECT name, spec FROM presets")
        }
        check(stored)
        for name, spec in rows:
            conn.execute(
                "INSERT INTO presets (name, spec, created_at, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, "
                "updated_at = excluded.updated_at",
                (name, json.dumps(spec), now, now),
            )


def delete(store: Store, name: str) -> None:
    """Remove the row; NotFound if there is none by that name."""
    with store.tx() as conn:
        if conn.execute("DELETE FROM presets WHERE name = ?", (name,)).rowcount == 0:
            raise NotFound(f"no preset named {name!r} (corral preset ls)")
