"""The ``api_keys`` table: one row a key, its secret kept only as a sha256.

:mod:`corral.keys` makes secrets and checks names; the daemon's ``KeyRing`` reads the
active rows through :func:`active_rows` and :func:`stamp_used` on its own connection.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass

from corral.errors import Conflict
from corral.store.db import Store

_LISTED = "id, name, scope, created_at, last_used_at, revoked_at"


@dataclass
class ApiKey:
    """One key as listed: never the secret, never its hash."""

    id: str
    name: str
    scope: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict:
        return {**asdict(self), "active": self.active}


def insert(store: Store, key: ApiKey, digest: str) -> None:
    """Add ``key`` with the sha256 ``digest`` of its secret; a taken id is a Conflict."""
    try:
        with store.tx() as conn:
            conn.execute(
                "INSERT INTO api_keys (id, name, hash, scope, created_at) VALUES (?, ?, ?, ?, ?)",
                (key.id, key.name, digest, key.scope, key.created_at),
            )
    except sqlite3.IntegrityError:
        raise Conflict(f"an API key with id {key.id!r} already exists") from None


def list_all(store: Store) -> list[ApiKey]:
    """Every key, oldest first."""
    rows = store.query(f"SELECT {_LISTED} FROM api_keys ORDER BY created_at, id")
    return [ApiKey(**dict(r)) for r in rows]


def get(store: Store, key_id: str) -> ApiKey | None:
    rows = store.query(f"SELECT {_LISTED} FROM api_keys WHERE id = ?", (key_id,))
    return ApiKey(**dict(rows[0])) if rows else None


def revoke(store: Store, key_id: str, at: float | None = None) -> None:
    """Set ``revoked_at`` unless it is set already (the first revocation is kept)."""
    with store.tx() as conn:
        conn.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (time.time() if at is None else at, key_id),
        )


def active_count(store: Store) -> int:
    return store.query("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL")[0][0]


def active_rows(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """``id, hash, scope, last_used_at`` of every unrevoked key."""
    return conn.execute(
        "SELECT id, hash, scope, last_used_at FROM api_keys WHERE revoked_at IS NULL"
    ).fetchall()


def stamp_used(conn: sqlite3.Connection, key_id: str, now: float) -> None:
    """One autocommit statement: no transaction is left open if it fails."""
    conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id))
