"""What the table modules of the supervised processes share: one row updated by name.

``instances`` and ``rpc_servers`` keep list and dict columns as JSON text and stamp
``updated_at`` on every change; the encoding and the UPDATE are written here once.
"""

from __future__ import annotations

import json
import time
from typing import Iterable

from corral.store.db import Store


def encode_json(values: dict, json_columns: Iterable[str]) -> dict:
    """``values`` with each of ``json_columns`` it holds as JSON text (changed in place)."""
    for col in json_columns:
        if col in values:
            values[col] = json.dumps(values[col])
    return values


def update_by_name(
    store: Store,
    table: str,
    name: str,
    changes: dict,
    columns: Iterable[str],
    json_columns: Iterable[str],
    what: str,
) -> None:
    """Set ``changes`` on the row ``name`` of ``table`` and stamp ``updated_at``; a key
    not in ``columns`` is a programming error (ValueError naming the ``what`` columns)."""
    bad = set(changes) - set(columns)
    if bad:
        raise ValueError(f"unknown {what} columns: {bad}")
    changes["updated_at"] = time.time()
    encode_json(changes, json_columns)
    sets = ", ".join(f"{c} = :{c}" for c in changes)
    with store.tx() as conn:
        conn.execute(f"UPDATE {table} SET {sets} WHERE name = :_name", {**changes, "_name": name})
