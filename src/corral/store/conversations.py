"""The ``conversations`` table: chats of the web UI, kept by the daemon.

A conversation is one row: title, model, system prompt, sampling ``params`` and the whole
``messages`` list as JSON. Chats are small and always read whole, so one JSON column beats
a messages table (no joins, one write per reply).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field

from corral.errors import NotFound
from corral.store.db import Store

#: Columns a caller may change with ``update`` (id and timestamps are the store's).
EDITABLE = ("title", "model", "system", "params", "messages")


@dataclass
class Conversation:
    id: str
    title: str = ""
    model: str | None = None
    system: str = ""
    params: dict = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list)
    created_at: float = 0.0
    updated_at: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """The list view: everything but the messages, plus their count."""
        data = self.to_dict()
        data["message_count"] = len(data.pop("messages"))
        return data


def _from_row(row) -> Conversation:
    data = dict(row)
    data["params"] = json.loads(data["params"])
    data["messages"] = json.loads(data["messages"])
    return Conversation(**data)


def create(
    store: Store,
    *,
    title: str = "",
    model: str | None = None,
    system: str = "",
    params: dict | None = None,
    messages: list[dict] | None = None,
) -> Conversation:
    """Insert a new conversation with a random id."""
    now = time.time()
    conv = Conversation(
        id=secrets.token_hex(8),
        title=title,
        model=model,
        system=system,
        params=params or {},
        messages=messages or [],
        created_at=now,
        updated_at=now,
    )
    with store.tx() as conn:
        conn.execute(
            "INSERT INTO conversations (id, title, model, system, params, messages, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                conv.id,
                conv.title,
                conv.model,
                conv.system,
                json.dumps(conv.params),
                json.dumps(conv.messages),
                now,
                now,
            ),
        )
    return conv


def get(store: Store, conv_id: str) -> Conversation:
    rows = store.query("SELECT * FROM conversations WHERE id = ?", (conv_id,))
    if not rows:
        raise NotFound(f"no conversation with id {conv_id!r}")
    return _from_row(rows[0])


def list_all(store: Store) -> list[Conversation]:
    """Every conversation, most recently updated first."""
    rows = store.query("SELECT * FROM conversations ORDER BY updated_at DESC, id")
    return [_from_row(r) for r in rows]


def update(store: Store, conv_id: str, **changes) -> Conversation:
    """Change some editable columns and bump ``updated_at``; NotFound for an unknown id."""
    bad = set(changes) - set(EDITABLE)
    if bad:
        raise ValueError(f"not editable: {sorted(bad)}")
    values = {k: json.dumps(v) if k in ("params", "messages") else v for k, v in changes.items()}
    values["updated_at"] = time.time()
    sets = ", ".join(f"{k} = :{k}" for k in values)
    with store.tx() as conn:
        cur = conn.execute(
            f"UPDATE conversations SET {sets} WHERE id = :_id", {**values, "_id": conv_id}
        )
        if cur.rowcount == 0:
            raise NotFound(f"no conversation with id {conv_id!r}")
    return get(store, conv_id)


def delete(store: Store, conv_id: str) -> None:
    with store.tx() as conn:
        cur = conn.execute("DELETE FROM conversations WHERE id = ?", (conv_id,))
        if cur.rowcount == 0:
            raise NotFound(f"no conversation with id {conv_id!r}")
