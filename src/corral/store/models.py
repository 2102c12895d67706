"""The ``models`` table: every GGUF model corral knows (downloaded or imported in place)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from corral.errors import Conflict, NotFound
from corral.store.db import Store


@dataclass
class ModelRecord:
    """One model. ``files`` are the GGUF parts in order: ``[{"path", "size", "sha256"}]``.

    ``owned`` is True only when corral downloaded the files itself; only then may
    ``corral rm`` delete them.
    """

    id: str
    name: str
    files: list[dict]
    size: int
    source: str  # 'hub' or 'local'
    aliases: list[str] = field(default_factory=list)
    mmproj: str | None = None
    repo: str | None = None
    revision: str | None = None
    filename: str | None = None
    owned: bool = False
    metadata: dict = field(default_factory=dict)
    added_at: float = 0.0

    @property
    def path(self) -> str:
        """The path llama-server's ``--model`` takes (the first part of a split model)."""
        return self.files[0]["path"]

    @property
    def paths(self) -> list[str]:
        return [f["path"] for f in self.files]

    def to_dict(self) -> dict:
        return asdict(self)


_JSON_COLUMNS = ("aliases", "files", "metadata")
_COLUMNS = tuple(ModelRecord.__dataclass_fields__)


def _from_row(row) -> ModelRecord:
    data = dict(row)
    for col in _JSON_COLUMNS:
        data[col] = json.loads(data[col])
    data["owned"] = bool(data["owned"])
    return ModelRecord(**data)


def _to_values(values: dict) -> dict:
    out = dict(values)
    for col in _JSON_COLUMNS:
        if col in out:
            out[col] = json.dumps(out[col])
    if "owned" in out:
        out["owned"] = int(bool(out["owned"]))
    return out


def insert(store: Store, rec: ModelRecord) -> ModelRecord:
    """Insert a new model; a taken id or name is a Conflict."""
    rec.added_at = rec.added_at or time.time()
    values = _to_values({c: getattr(rec, c) for c in _COLUMNS})
    with store.tx() as conn:
        if conn.execute("SELECT 1 FROM models WHERE id = ?", (rec.id,)).fetchone():
            raise Conflict(f"a model with id {rec.id!r} already exists")
        if conn.execute("SELECT 1 FROM models WHERE name = ?", (rec.name,)).fetchone():
            raise Conflict(f"a model named {rec.name!r} already exists")
        cols = ", ".join(_COLUMNS)
        marks = ", ".join(f":{c}" for c in _COLUMNS)
        conn.execute(f"INSERT INTO models ({cols}) VALUES ({marks})", values)
    return rec


def update(store: Store, model_id: str, **changes) -> None:
    """Update some columns of one model (unknown columns are a programming error)."""
    if not changes:
        return
    bad = set(changes) - set(_COLUMNS)
    if bad:
        raise ValueError(f"unknown model columns: {bad}")
    values = _to_values(changes)
    sets = ", ".join(f"{c} = :{c}" for c in values)
    with store.tx() as conn:
        if "name" in changes:
            other = conn.execute(
                "SELECT id FROM models WHERE name = ? AND id != ?", (changes["name"], model_id)
            ).fetchone()
            if other:
                raise Conflict(f"a model named {changes['name']!r} already exists")
        conn.execute(f"UPDATE models SET {sets} WHERE id = :_id", {**values, "_id": model_id})


def get(store: Store, model_id: str) -> ModelRecord:
    rows = store.query("SELECT * FROM models WHERE id = ?", (model_id,))
    if not rows:
        raise NotFound(f"no model with id {model_id!r}")
    return _from_row(rows[0])


def find(store: Store, model_id: str) -> ModelRecord | None:
    rows = store.query("SELECT * FROM models WHERE id = ?", (model_id,))
    return _from_row(rows[0]) if rows else None


def list_all(store: Store) -> list[ModelRecord]:
    return [_from_row(r) for r in store.query("SELECT * FROM models ORDER BY name")]


def names(store: Store) -> set[str]:
    return {r[0] for r in store.query("SELECT name FROM models")}


def delete(store: Store, model_id: str) -> None:
    with store.tx() as conn:
        conn.execute("DELETE FROM models WHERE id = ?", (model_id,))
