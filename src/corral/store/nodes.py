"""The ``nodes`` table: the corral daemons this one (the controller) links to.

Each row holds the admin key of its node, because the controller must send it on every
call; the key is the one column no view carries: :class:`NodeRow` keeps it out of its
``repr`` and :meth:`NodeRow.to_dict`, so neither a log line nor an API answer shows it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from corral.errors import Conflict
from corral.store.db import Store


@dataclass
class NodeRow:
    """One linked node as stored."""

    name: str
    url: str
    key: str = field(repr=False)
    added_at: float = 0.0
    last_seen: float | None = None

    def to_dict(self) -> dict:
        """Everything but the key."""
        return {
            "name": self.name,
            "url": self.url,
            "added_at": self.added_at,
            "last_seen": self.last_seen,
        }


_COLUMNS = "name, url, key, added_at, last_seen"


def insert(store: Store, row: NodeRow) -> None:
    """Add ``row``; a taken name is a Conflict."""
    try:
        with store.tx() as conn:
            conn.execute(
                "INSERT INTO nodes (name, url, key, added_at, last_seen) VALUES (?, ?, ?, ?, ?)",
                (row.name, row.url, row.key, row.added_at, row.last_seen),
            )
    except sqlite3.IntegrityError:
        raise Conflict(f"a node named {row.name!r} exists already (corral nodes rm it first)")


def list_all(store: Store) -> list[NodeRow]:
    """Every node, by name."""
    rows = store.query(f"SELECT {_COLUMNS} FROM nodes ORDER BY name")
    return [NodeRow(**dict(r)) for r in rows]


def get(store: Store, name: str) -> NodeRow | None:
    rows = store.query(f"SELECT {_COLUMNS} FROM nodes WHERE name = ?", (name,))
    return NodeRow(**dict(rows[0])) if rows else None


def delete(store: Store, name: str) -> bool:
    """Remove the node ``name``; whether it was there."""
    with store.tx() as conn:
        return conn.execute("DELETE FROM nodes WHERE name = ?", (name,)).rowcount > 0


def stamp_seen(store: Store, name: str, at: float) -> None:
    """Record that the node answered at ``at``."""
    with store.tx() as conn:
        conn.execute("UPDATE nodes SET last_seen = ? WHERE name = ?", (at, name))
