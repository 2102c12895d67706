"""Connection, pragmas, numbered migrations, and the one place sqlite3 errors become corral's.

Migrations are append-only: ``MIGRATIONS[i]`` takes the schema from version ``i`` to
``i + 1`` and is recorded in ``schema_migrations`` in the same transaction, so a crash
mid-migration leaves the previous version intact.

Errors. Every way into the database (:func:`connect`, :meth:`Store.tx`,
:meth:`Store.query`) goes through :func:`translate`: a full disk (``SQLITE_FULL``,
``ENOSPC``) raises :class:`~corral.errors.DiskFull` (507, exit 11); a corrupt file, an
I/O error, a read-only or unopenable store raise :class:`~corral.errors.StoreError`
(503, exit 12). Store functions therefore never raise ``sqlite3.Error`` for a failing
store. Two kinds pass through unchanged because they are the caller's business, not
the store's health: ``IntegrityError`` (a constraint the caller's SQL broke: a caller
may retry, e.g. a key id collision) and ``ProgrammingError``/``InterfaceError`` (a bug).

A deleted ``corral.db``. The daemon keeps its connection open for its whole life; if the
file is unlinked under it, SQLite happily goes on writing into the deleted inode and
every other process sees an empty store. So each transaction and query first compares
the file's (device, inode) with the one opened (:meth:`Store._check_file`, one
``stat``). When the file is gone the store is rebuilt from the still-open handle (the
SQLite backup API copies every table, presets and keys included) into a new
``corral.db``; if that copy fails a fresh, empty store is created. Then every
``Store.on_recreated`` callback runs, so owners of in-memory state (the supervisor)
re-register what runs, and a warning is logged. A file *replaced* by another one (a
restore from backup) is simply reopened, callbacks included. Other connections of the
process on the same file (the daemon's key ring) register with :func:`add_companion`
and are closed first: a connection closed after the new file exists would delete the
new file's ``-wal``/``-shm`` by name.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NoReturn

from corral.errors import DiskFull, StoreError, UsageError

log = logging.getLogger("corral.store")

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
    id          TEXT PRIMARY KEY,            -- 'org/repo:Q4_K_M' (hub) or 'local/<name>'
    name        TEXT NOT NULL UNIQUE,        -- short name users type: 'gemma-3-270m'
    aliases     TEXT NOT NULL DEFAULT '[]',  -- JSON list of more names
    files       TEXT NOT NULL,               -- JSON [{"path", "size", "sha256"}], parts in order
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
    spec        TEXT NOT NULL,           -- JSON: model, build, flags, env, restart, ...
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
ALTER TABLE instances ADD COLUMN origin TEXT NOT NULL DEFAULT 'user'; -- 'user' | 'router'
ALTER TABLE instances ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;   -- never evicted nor idled out
ALTER TABLE instances ADD COLUMN idle_ttl REAL;                       -- NULL: default; 0: never
ALTER TABLE instances ADD COLUMN aliases TEXT NOT NULL DEFAULT '[]';  -- JSON: more names
"""

M009_INSTANCE_PLACEMENT = """
ALTER TABLE instances ADD COLUMN placement TEXT NOT NULL DEFAULT 'null';  -- JSON plan or null
"""

M010_NODES = """
CREATE TABLE nodes (
    name        TEXT PRIMARY KEY,        -- the name users type: `corral nodes rm NAME`
    url         TEXT NOT NULL,           -- the node daemon's base URL, http(s)://host:port
    key         TEXT NOT NULL,           -- an admin key of that node; sent, never shown
    added_at    REAL NOT NULL,
    last_seen   REAL                     -- last answered poll (stamped now and then)
);
"""

M011_RPC_SERVERS = """
CREATE TABLE rpc_servers (
    name            TEXT PRIMARY KEY,          -- `corral rpc stop NAME`
    binary          TEXT NOT NULL,             -- the rpc-server (or ggml-rpc-server) run
    host            TEXT NOT NULL,             -- the IP it binds, named by the user
    port            INTEGER NOT NULL,
    devices         TEXT NOT NULL DEFAULT '[]',  -- JSON: -d names; [] = rpc-server's choice
    threads         INTEGER,                   -- -t; NULL = rpc-server's default
    cache           INTEGER NOT NULL DEFAULT 1,  -- -c, under CORRAL_HOME/rpc-cache
    argv            TEXT NOT NULL DEFAULT '[]',  -- JSON, the exact command line spawned
    restart_policy  TEXT NOT NULL DEFAULT 'on-failure',
    state           TEXT NOT NULL DEFAULT 'stopped',
    pid             INTEGER,
    create_time     REAL,                      -- process start time: guards against pid reuse
    restarts        INTEGER NOT NULL DEFAULT 0,
    exit_code       INTEGER,
    last_error      TEXT,
    started_at      REAL,
    ready_at        REAL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE UNIQUE INDEX rpc_servers_address ON rpc_servers(host, port);
"""

MIGRATIONS: list[str] = [
    M001_INITIAL,
    M002_INSTANCE_VERSION,
    M003_MODELS,
    M004_BUILD_NUMBER,
    M005_PRESETS,
    M006_API_KEYS,
    M007_CONVERSATIONS,
    M008_INSTANCE_ROUTING,
    M009_INSTANCE_PLACEMENT,
    M010_NODES,
    M011_RPC_SERVERS,
]


#: Errors that are the caller's business (a broken constraint, a bug), not the store's health.
_PASS_THROUGH = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)


def translate(exc: BaseException, path: Path | str) -> StoreError | None:
    """The corral error for a failure of the store at ``path``, or None when ``exc`` is not
    one (an IntegrityError, a programming error, anything not sqlite3/OS)."""
    if isinstance(exc, _PASS_THROUGH) or not isinstance(exc, (sqlite3.Error, OSError)):
        return None
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFull(f"no space left to write {exc.filename or path}")
        where = exc.filename or path
        if exc.errno == errno.EROFS:
            return StoreError(f"cannot write {where}: CORRAL_HOME is on a read-only file system")
        return StoreError(f"cannot use {where}: {exc.strerror or exc}")
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc)
    if code == sqlite3.SQLITE_FULL or "disk is full" in text:
        return DiskFull(f"no space left on the device holding {path} ({text})")
    if (
        code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
        or "not a database" in text
        or "malformed" in text
    ):
        return StoreError(
            f"{path} is corrupt or not a corral database ({text}); "
            "move it aside and corral starts a new one"
        )
    if code == sqlite3.SQLITE_READONLY or "readonly" in text:
        return StoreError(f"the store {path} is read-only ({text})")
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        return StoreError(
            f"cannot open the store {path} ({text}): is its folder readable and writable?"
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(f"the store {path} is locked by another process ({text})")
    return StoreError(f"store error on {path}: {text}")


def _raise_translated(exc: BaseException, path: Path | str) -> NoReturn:
    err = translate(exc, path)
    if err is None:
        raise exc
    raise err from exc


@contextmanager
def translated(path: Path | str) -> Iterator[None]:
    """Run a block with store failures raised as DiskFull/StoreError (see the module doc)."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        _raise_translated(exc, path)
    except UnicodeEncodeError:
        # A lone surrogate (a file name's undecodable byte, surrogateescape) cannot be
        # stored as UTF-8: the caller's bad text, not a store failure.
        raise UsageError("the text holds characters that are not valid Unicode") from None


# Held while a store is rebuilt: no connection of this process may open the file meanwhile.
_REOPEN = threading.RLock()
_companions: dict[str, list[Callable[[], None]]] = {}


def add_companion(path: Path, close: Callable[[], None]) -> None:
    """Register ``close`` to be called (before anything else) when the store at ``path``
    is rebuilt: it must close that other connection, which may reopen later."""
    with _REOPEN:
        _companions.setdefault(str(path), []).append(close)


def remove_companion(path: Path, close: Callable[[], None]) -> None:
    with _REOPEN:
        found = _companions.get(str(path), [])
        if close in found:
            found.remove(close)


def connect(path: Path) -> sqlite3.Connection:
    """Open the database with corral's pragmas and bring its schema up to date.

    Raises StoreError (corrupt, unreadable, read-only) or DiskFull, never sqlite3.Error."""
    with _REOPEN, translated(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=10000")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn


def schema_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, applied_at REAL)"
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


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class Store:
    """A thread-safe handle on the database used by the daemon and the CLI.

    ``on_recreated``: callables ``f(store)`` run after ``corral.db`` was found deleted or
    replaced and has been rebuilt (see the module docstring). They run in the thread that
    noticed, with the store's lock held (``store.tx()`` is re-entrant for them), before the
    write or read that noticed goes on; one that raises is logged and the others still run.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self.conn = connect(path)
        self._remember()
        self.on_recreated: list[Callable[["Store"], None]] = []

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on error).

        Store failures, at BEGIN, in the block or at COMMIT, raise DiskFull/StoreError and
        leave no transaction open."""
        with self._lock:
            self._check_file()
            with translated(self.path):
                self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, (sqlite3.Error, OSError)):
                    _raise_translated(exc, self.path)
                raise

    def _rollback(self) -> None:
        if not self.conn.in_transaction:  # SQLite already rolled back (e.g. on SQLITE_FULL)
            return
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("rollback failed on %s: %s", self.path, exc)

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._check_file()
            with translated(self.path):
                return self.conn.execute(sql, params).fetchall()

    def _check_file(self) -> None:
        """Rebuild the store when corral.db was deleted or replaced under this handle."""
        ident = _identity(self.path)
        if ident == self._ident:
            return
        with _REOPEN:
            if ident is None:
                log.warning(
                    "%s was deleted while corral had it open: recreating it from the "
                    "open handle and re-registering what runs",
                    self.path,
                )
                self._rebuild()
            else:
                log.warning("%s was replaced by another file: reopening it", self.path)
                self._close_all()
                # Our -wal/-shm (SQLite does not remove them once the file has moved) would
                # be read as the new file's; a -wal that came with the new file stays.
                for side, ident in self._sides.items():
                    if ident is not None and _identity(side) == ident:
                        side.unlink(missing_ok=True)
                self.conn = connect(self.path)
            self._remember()
        for callback in list(self.on_recreated):
            try:
                callback(self)
            except Exception:  # noqa: BLE001 - one failing owner must not stop the others
                log.exception("an on_recreated callback of %s failed", self.path)

    def _remember(self) -> None:
        """Note the identity of the open file and of its -wal/-shm."""
        self._ident = _identity(self.path)
        self._sides = {
            Path(f"{self.path}{suffix}"): _identity(Path(f"{self.path}{suffix}"))
            for suffix in ("-wal", "-shm")
        }

    def _rebuild(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.rebuild")
        tmp.unlink(missing_ok=True)
        copied = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            dest = sqlite3.connect(tmp, isolation_level=None)
            try:
                self.conn.backup(dest)
                dest.execute("PRAGMA journal_mode=DELETE")  # one self-contained file to move
            finally:
                dest.close()
            copied = True
        except (sqlite3.Error, OSError) as exc:
            log.error("could not copy the deleted %s (%s): starting an empty store", self.path, exc)
            tmp.unlink(missing_ok=True)
        self._close_all()
        # The -wal/-shm still under the old names belong to the deleted file: a new
        # connection would read them as its own.
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        if copied:
            with translated(self.path):
                os.replace(tmp, self.path)
        self.conn = connect(self.path)

    def _close_all(self) -> None:
        for close in list(_companions.get(str(self.path), [])):
            try:
                close()
            except Exception:  # noqa: BLE001
                log.exception("closing a companion connection of %s failed", self.path)
        try:
            self.conn.close()
        except sqlite3.Error as exc:
            log.warning("closing %s failed: %s", self.path, exc)

    def close(self) -> None:
        with self._lock:
            self.conn.close()
