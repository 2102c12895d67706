"""API keys: create, list, revoke, and the daemon's in-memory view for verifying them.

A secret looks like ``crl_<43 url-safe chars>`` (256 random bits) and is shown once, at
creation. The store keeps only its sha256 and a public id, ``key_<first 8 chars after
crl_>``, so a user holding a secret can tell which key it is without the store ever
holding the secret. A revoked key keeps its row (``revoked_at`` set) for the record.

Scopes: ``admin`` may call everything; ``inference`` only the OpenAI router (``/v1/*``).

The CLI works on the store directly (file access to CORRAL_HOME is ownership), so keys
can be managed whether a daemon runs or not; the daemon's :class:`KeyRing` notices any
commit to the database (``PRAGMA data_version``) before it answers, so a revoke or a new
key counts from the next request on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from corral.errors import Conflict, NotFound, StoreError, UsageError
from corral.settings import TOKEN_FILE
from corral.store import keys as table
from corral.store.db import Store, add_companion, connect, remove_companion
from corral.store.keys import ApiKey
from corral.types import KEY_NAME_MAX, KEY_SCOPES

PREFIX = "crl_"
ID_PREFIX = "key_"
SCOPES = KEY_SCOPES
#: last_used_at is written at most this often per key: a write per request would cost latency.
USED_GRANULARITY = 60.0

log = logging.getLogger("corral.keys")


def hash_secret(secret: str) -> str:
    """The stored form of a secret (sha256 hex): 256 random bits need no salt nor stretching."""
    return hashlib.sha256(secret.encode()).hexdigest()


def public_id(secret: str) -> str:
    return ID_PREFIX + secret[len(PREFIX) : len(PREFIX) + 8]


def _check(name: str, scope: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= KEY_NAME_MAX or not name.isprintable():
        raise UsageError(f"a key name must be 1-{KEY_NAME_MAX} printable characters")
    if scope not in SCOPES:
        raise UsageError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    return name


def create_key(store: Store, name: str, scope: str = "admin") -> tuple[ApiKey, str]:
    """Make a key; return it with its secret, which is not kept anywhere."""
    name = _check(name, scope)
    while True:
        secret = PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(public_id(secret), name, scope, time.time(), None, None)
        try:
            table.insert(store, key, hash_secret(secret))
        except Conflict:  # a 48-bit id collision: draw again
            continue
        return key, secret


def list_keys(store: Store) -> list[ApiKey]:
    return table.list_all(store)


def get_key(store: Store, key_id: str) -> ApiKey:
    key = table.get(store, key_id)
    if key is None:
        raise NotFound(f"no API key {key_id!r} (see `corral keys ls`)")
    return key


def revoke_key(store: Store, key_id: str) -> ApiKey:
    """Revoke a key (idempotent: a revoked key keeps its first revocation time)."""
    get_key(store, key_id)
    table.revoke(store, key_id)
    return get_key(store, key_id)


def active_count(store: Store) -> int:
    return table.active_count(store)


def keys_exist(db_path: Path) -> bool:
    """Whether the store at ``db_path`` holds an unrevoked key (no store is created to
    find out): what a bind beyond loopback needs, for ``corral serve`` and its service."""
    if not db_path.exists():
        return False
    store = Store(db_path)
    try:
        return active_count(store) > 0
    finally:
        store.close()


@dataclass(frozen=True)
class Grant:
    """Who a verified secret belongs to."""

    key_id: str
    scope: str


RECHECK = 0.25  # seconds between two checks for changed keys (see KeyRing)


class KeyRing:
    """The daemon's view of the active keys, kept in memory for per-request checks.

    At most every ``RECHECK`` seconds (and at once when a secret is not known) it asks
    SQLite whether any other connection committed since the last load (``PRAGMA
    data_version``) and reloads the few rows only then: a ``corral keys revoke`` in
    another process counts within a quarter of a second, a new key at its first use,
    and the relay's hot path does not pay a query per request. Used from the event loop
    thread only.
    """

    def __init__(self, db_path: Path, clock=time.time) -> None:
        self._path = db_path
        self._conn: sqlite3.Connection | None = None
        self._open()
        # Closed by the Store when it rebuilds a deleted corral.db; reopened on next use.
        add_companion(db_path, self._drop)
        self._clock = clock
        self._version: int | None = None
        self._checked = float("-inf")  # monotonic time of the last data_version check
        #: sha256 -> (grant, last_used_at as stored or stamped by us)
        self._by_hash: dict[str, tuple[Grant, float]] = {}

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = connect(self._path)
            # Never let a busy writer stall the event loop: a last-used stamp can wait.
            conn.execute("PRAGMA busy_timeout=20")
            self._conn = conn
            self._version = None
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _sync(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < RECHECK:
            return
        self._checked = now
        try:
            conn = self._open()
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version:
                return
            rows = table.active_rows(conn)
        except (
            sqlite3.Error,
            StoreError,
        ) as exc:  # keep the last good view, not fail every request
            log.warning("could not read the API keys: %s", exc)
            return
        self._by_hash = {
            r["hash"]: (Grant(r["id"], r["scope"]), r["last_used_at"] or 0.0) for r in rows
        }
        self._version = version

    def any_active(self) -> bool:
        """Whether at least one unrevoked key exists."""
        self._sync()
        return bool(self._by_hash)

    def verify(self, secret: str) -> Grant | None:
        """The grant of an active key with this secret, else None."""
        self._sync()
        digest = hash_secret(secret)
        found = self._by_hash.get(digest)
        if found is None:  # perhaps created a moment ago: look again now
            self._sync(force=True)
            found = self._by_hash.get(digest)
        if found is None:
            return None
        grant, stamped = found
        now = self._clock()
        if now - stamped >= USED_GRANULARITY:
            self._stamp(grant.key_id, now)
        return grant

    def _stamp(self, key_id: str, now: float) -> None:
        try:  # one autocommit statement: no transaction left open on failure
            table.stamp_used(self._open(), key_id, now)
        except (
            sqlite3.Error,
            StoreError,
        ):  # the store is busy (or worse): stamp on a later request
            return
        # Our own commit does not move data_version: update the cached stamp ourselves.
        for digest, (grant, _) in self._by_hash.items():
            if grant.key_id == key_id:
                self._by_hash[digest] = (grant, now)

    def close(self) -> None:
        remove_companion(self._path, self._drop)
        self._drop()


def write_token(home: Path) -> str:
    """Write a fresh local admin token to CORRAL_HOME/daemon.token and return it.

    Mode 0600 from the start (never world-readable, not even briefly) and swapped into
    place atomically, so a CLI reading it meanwhile sees the old token or the new one.
    """
    token = secrets.token_urlsafe(32)
    path = home / TOKEN_FILE
    tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a daemon killed mid-write
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.replace(tmp, path)
    return token
