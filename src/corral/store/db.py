"""Connection, pragmas and numbered migrations.

Migrations are append-only: ``MIGRATIONS[i]`` takes the schema from version ``i`` to
``i + 1`` and is recorded in ``schema_migrations`` in the same transaction, so a crash
mid-migration leaves the previous version intact.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

M001_INITIAL = """
CREATE TABLE instances (
    name            TEXT PRIMARY KEY,
    model           TEXT NOT NULL,
    binary          TEXT NOT NULL,
    build_id        INTEGER,
    flags           TEXT NOT NULL DEFAULT '[]',   -- JSON [[flag, value|null], ...]
    argv            TEXT NOT NULL DEFAULT '[]',   -- JSON, the exact command line spawned
    host            TEXT NOT NULL DEFAULT '127.0.0.1',
    port            INTEGER NOT NULL,
    restart_policy  TEXT NOT NULL DEFAULT 'on-failure',
    desired         TEXT NOT NULL DEFAULT 'running',
    state           TEXT NOT NULL DEFAULT 'stopped',
    pid             INTEGER,
    create_time     REAL,          -- process start time (psutil), guards against pid reuse
    restarts        INTEGER NOT NULL DEFAULT 0,
    exit_code       INTEGER,
    last_error      TEXT,
    started_at      REAL,
    ready_at        REAL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE UNIQUE INDEX instances_port ON instances(port);

CREATE TABLE builds (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    path        TEXT NOT NULL UNIQUE,
    version     TEXT,
    backend     TEXT NOT NULL DEFAULT 'unknown',
    origin      TEXT NOT NULL DEFAULT 'added',
    is_default  INTEGER NOT NULL DEFAULT 0,
    added_at    REAL NOT NULL
);
"""

M002_INSTANCE_VERSION = """
ALTER TABLE instances ADD COLUMN version TEXT;   -- the binary's --version at launch
"""

M003_MODELS = """
CREATE TABLE models (
    id          TEXT PRIMARY KEY,            -- 'org/repo:Q4_K_M' for hub models, 'local/<name>' else
    name        TEXT NOT NULL UNIQUE,        -- short name users type: 'gemma-3-270m'
    aliases     TEXT NOT NULL DEFAULT '[]',  -- JSON list of more names
    files       TEXT NOT NULL,               -- JSON [{"path", "size", "sha256"}], split parts in order
    mmproj      TEXT,                        -- path of the paired vision projector, if any
    size        INTEGER NOT NULL,            -- bytes, all parts
    source      TEXT NOT NULL,               -- 'hub' or 'local'
    repo        TEXT,
    revision    TEXT,
    filename    TEXT,
    owned       INTEGER NOT NULL DEFAULT 0,  -- 1: corral downloaded the files (rm deletes them)
    metadata    TEXT NOT NULL DEFAULT '{}',  -- JSON: GGUF header facts
    added_at    REAL NOT NULL
);

CREATE TABLE pulls (
    id          TEXT PRIMARY KEY,
    ref         TEXT NOT NULL,
    state       TEXT NOT NULL,               -- queued, running, done, failed, cancelled
    total       INTEGER NOT NULL DEFAULT 0,
    done        INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    model_id    TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
"""

M004_BUILD_NUMBER = """
ALTER TABLE builds ADD COLUMN build TEXT;    -- llama.cpp build tag, e.g. 'b6000', when known
"""

M005_PRESETS = """
CREATE TABLE presets (
    name        TEXT PRIMARY KEY,        -- '*' holds the defaults applied to every launch
    spec        TEXT NOT NULL,           -- JSON: model, build, flags, env, restart, idle_ttl, aliases, pinned
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
"""

M006_API_KEYS = """
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,      -- public id shown by `corral keys ls`
    name          TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,  -- sha256 of the secret; the secret itself is never stored
    scope         TEXT NOT NULL DEFAULT 'admin',   -- 'admin' | 'inference'
    created_at    REAL NOT NULL,
    last_used_at  REAL,
    revoked_at    REAL
);
"""

M007_CONVERSATIONS = """
CREATE TABLE conversations (
    id          TEXT PRIMARY KEY,
    title       TEXT NOT NULL DEFAULT '',
    model       TEXT,
    system      TEXT NOT NULL DEFAULT '',
    params      TEXT NOT NULL DEFAULT '{}',   -- JSON: temperature, max_tokens, ...
    messages    TEXT NOT NULL DEFAULT '[]',   -- JSON [{role, content, ...}, ...]
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
"""

M008_INSTANCE_ROUTING = """
ALTER TABLE instances ADD COLUMN env TEXT NOT NULL DEFAULT '{}';      -- JSON extra environment
ALTER TABLE instances ADD COLUMN preset TEXT;                         -- preset it was launched from
ALTER TABLE instances ADD COLUMN origin TEXT NOT NULL DEFAULT 'user'; -- 'user' | 'router' (on demand)
ALTER TABLE instances ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;   -- never evicted nor idled out
ALTER TABLE instances ADD COLUMN idle_ttl REAL;                       -- seconds; NULL = default; 0 = never
ALTER TABLE instances ADD COLUMN aliases TEXT NOT NULL DEFAULT '[]';  -- JSON names it also answers to
"""

MIGRATIONS: list[str] = [M001_INITIAL, M002_INSTANCE_VERSION, M003_MODELS, M004_BUILD_NUMBER,
                         M005_PRESETS, M006_API_KEYS, M007_CONVERSATIONS, M008_INSTANCE_ROUTING]


def connect(path: Path) -> sqlite3.Connection:
    """Open the database with corral's pragmas and bring its schema up to date."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    migrate(conn)
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return row[0] or 0


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in its own transaction; return the new version."""
    version = schema_version(conn)
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            if schema_version(conn) >= number:
                conn.execute("COMMIT")
                continue
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                (number, time.time()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    # executescript() would commit implicitly; split so the migration stays one transaction.
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class Store:
    """A thread-safe handle on the database used by the daemon and the CLI."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)
        self._lock = threading.RLock()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on error)."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self.conn.close()
