"""The ``pulls`` table: the record of pull jobs (the daemon's view of them is in memory).

:class:`corral.pulls.PullManager` writes a job when it starts and as it goes (at most
once a second), and reads the recent ones back when the daemon starts.
"""

from __future__ import annotations

import time

from corral.store.db import Store

#: The columns a job is read back with.
COLUMNS = ("id", "ref", "state", "total", "done", "error", "model_id", "created_at")


def recent(store: Store, limit: int = 100) -> list[dict]:
    """The last ``limit`` jobs, newest first, as ``{column: value}``."""
    rows = store.query(
        f"SELECT {', '.join(COLUMNS)} FROM pulls ORDER BY created_at DESC LIMIT ?", (limit,)
    )
    return [dict(r) for r in rows]


def insert(
    store: Store, job_id: str, ref: str, state: str, total: int, done: int, created_at: float
) -> None:
    with store.tx() as conn:
        conn.execute(
            "INSERT INTO pulls (id, ref, state, total, done, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job_id, ref, state, total, done, created_at, time.time()),
        )


def update(
    store: Store,
    job_id: str,
    state: str,
    total: int,
    done: int,
    error: str | None,
    model_id: str | None,
) -> None:
    with store.tx() as conn:
        conn.execute(
            "UPDATE pulls SET state=?, total=?, done=?, error=?, model_id=?, "
            "updated_at=? WHERE id=?",
            (state, total, done, error, model_id, time.time(), job_id),
        )
