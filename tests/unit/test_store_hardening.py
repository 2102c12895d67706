"""The store's one choke point for failures, a deleted corral.db, file modes, body caps.

In-process and deterministic: a genuine SQLITE_FULL comes from ``PRAGMA max_page_count``,
a corrupt file from random bytes, a deletion from ``unlink``; the body cap is driven
through its ASGI interface with a fake app.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat

import pytest

from corral import keys
from corral.api import limits
from corral.errors import DiskFull, StoreError
from corral.settings import load_settings, secure_home
from corral.store import builds, conversations
from corral.store.db import Store


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ------------------------------------------------------------------------ disk full


def _fill(store: Store) -> None:
    """Cap the database at its current size: the next page it needs is SQLITE_FULL."""
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count={pages}")


def test_disk_full_in_a_store_function_is_diskfull_not_sqlite_error(tmp_path):
    store = Store(tmp_path / "corral.db")
    _fill(store)
    with pytest.raises(DiskFull) as info:
        for i in range(200):  # more rows than the free space of the last page holds
            conversations.create(
                store, title=f"chat {i}", messages=[{"role": "user", "content": "x" * 2000}]
            )
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert info.value.status == 507 and info.value.exit_code == 11
    assert not store.conn.in_transaction  # no transaction left open by the failed write
    store.conn.execute("PRAGMA max_page_count=1000000")  # space freed: writes work again
    conversations.create(store, title="after")
    assert any(c.title == "after" for c in conversations.list_all(store))


def test_failed_commit_leaves_no_open_transaction(tmp_path):
    store = Store(tmp_path / "corral.db")
    _fill(store)
    for _ in range(3):  # before the fix the second BEGIN failed: "within a transaction"
        with pytest.raises(DiskFull):
            with store.tx() as conn:
                conn.execute("INSERT INTO builds (path, added_at) VALUES (?, 0)", ("/x" * 30000,))
    assert not store.conn.in_transaction


def test_corrupt_db_is_store_error_not_sqlite_error(tmp_path):
    path = tmp_path / "corral.db"
    path.write_bytes(os.urandom(64 * 1024))
    with pytest.raises(StoreError) as info:
        Store(path)
    assert not isinstance(info.value, DiskFull)
    assert "corrupt" in info.value.message and info.value.exit_code == 12


def test_integrity_errors_still_reach_the_caller(tmp_path):
    store = Store(tmp_path / "corral.db")
    with pytest.raises(sqlite3.IntegrityError):  # callers may handle these (keys retry)
        with store.tx() as conn:
            conn.execute("INSERT INTO builds (path, added_at) VALUES ('/x', 0)")
            conn.execute("INSERT INTO builds (path, added_at) VALUES ('/x', 0)")


# ------------------------------------------------------------------ deleted corral.db


def test_deleted_db_is_rebuilt_with_its_rows_and_callbacks_run(tmp_path, caplog):
    path = tmp_path / "corral.db"
    store = Store(path)
    builds.add(store, "/opt/llama-server", "v1")
    seen: list[Store] = []
    store.on_recreated.append(seen.append)
    path.unlink()
    builds.add(store, "/opt/other", "v2")  # the write that notices
    assert seen == [store]
    assert path.exists()
    assert "was deleted" in caplog.text
    other = Store(path)  # another process's view: the file on disk has both rows
    assert sorted(b.path for b in builds.list_all(other)) == ["/opt/llama-server", "/opt/other"]
    other.close()
    builds.add(store, "/opt/third", "v3")  # no second rebuild
    assert seen == [store]


def test_deleted_db_with_its_wal_and_keyring_open_keeps_every_key(tmp_path):
    path = tmp_path / "corral.db"
    store = Store(path)
    _, secret = keys.create_key(store, "laptop")
    ring = keys.KeyRing(path)
    assert ring.verify(secret)
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"corral.db{suffix}").unlink(missing_ok=True)
    _, later = keys.create_key(store, "phone")  # rebuilds; the ring's connection is closed
    assert ring.verify(secret) and ring.verify(later)
    ring.close()  # must not delete the new file's -wal by name
    store.close()
    fresh = Store(path)
    assert {k.name for k in keys.list_keys(fresh)} == {"laptop", "phone"}


def test_replaced_db_is_reopened_not_overwritten(tmp_path):
    path = tmp_path / "corral.db"
    store = Store(path)
    builds.add(store, "/old", "v1")
    replacement = tmp_path / "restored.db"
    other = Store(replacement)
    builds.add(other, "/restored", "v9")
    other.close()
    os.replace(replacement, path)
    seen: list[Store] = []
    store.on_recreated.append(seen.append)
    assert [b.path for b in builds.list_all(store)] == ["/restored"]
    assert seen == [store]


# ------------------------------------------------------------------------ file modes


def test_home_created_0700_and_files_0600(tmp_path):
    old = os.umask(0o022)  # what a login shell has
    try:
        from corral.settings import private_umask

        private_umask()
        s = load_settings(home=tmp_path / "fresh")
        s.ensure_dirs()
        store = Store(s.db_path)
        builds.add(store, "/x", "v1")
        (s.logs_dir / "daemon.log").write_text("line\n")
        assert _mode(s.home) == 0o700 and _mode(s.logs_dir) == 0o700
        for name in ("corral.db", "corral.db-wal", "corral.db-shm", "logs/daemon.log"):
            assert _mode(s.home / name) == 0o600, name
        store.close()
    finally:
        os.umask(old)


def test_existing_loose_home_is_tightened_with_a_log_line(tmp_path, caplog):
    home = tmp_path / "old"
    (home / "logs").mkdir(parents=True)
    (home / "corral.db").write_bytes(b"")
    (home / "logs" / "a.log").write_text("x")
    for p, m in (
        (home, 0o755),
        (home / "logs", 0o755),
        (home / "corral.db", 0o644),
        (home / "logs" / "a.log", 0o644),
    ):
        os.chmod(p, m)
    changed = secure_home(home)
    assert _mode(home) == 0o700 and _mode(home / "logs") == 0o700
    assert _mode(home / "corral.db") == 0o600 and _mode(home / "logs" / "a.log") == 0o600
    assert len(changed) == 4 and "made CORRAL_HOME private" in caplog.text
    assert secure_home(home) == []  # nothing left to change, nothing logged


# ------------------------------------------------------------------------ body caps


class _Reader:
    """A fake app that reads the whole body, like Starlette does, and says how much."""

    def __init__(self) -> None:
        self.read = 0

    async def __call__(self, scope, receive, send) -> None:
        while True:
            message = await receive()
            self.read += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _run(app, path: str, chunks: list[bytes], headers=()) -> tuple[int, bytes, int]:
    sent = []
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    taken = 0

    async def receive():
        nonlocal taken
        taken += 1
        return pending[taken - 1]

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers)}
    asyncio.run(limits.BodyLimit(app)(scope, receive, send))
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, body, taken


def test_declared_oversize_body_is_413_before_reading():
    app = _Reader()
    status, body, taken = _run(
        app, "/api/v1/presets/x", [b"x"], [(b"content-length", str(300 * 1024 * 1024).encode())]
    )
    assert status == 413 and taken == 0 and app.read == 0
    assert json.loads(body)["error"]["code"] == "too_large"


def test_chunked_body_over_the_cap_stops_at_the_first_chunk_over():
    app = _Reader()
    chunk = b"x" * 65536
    chunks = [chunk] * 100  # 6.25 MiB, no Content-Length
    status, body, taken = _run(app, "/api/v1/presets/x", chunks)
    assert status == 413
    assert taken == limits.MANAGEMENT_MAX_BODY // len(chunk) + 1  # not one chunk more
    assert json.loads(body)["error"]["code"] == "too_large"


def test_body_at_the_cap_passes_and_import_has_its_own_cap():
    app = _Reader()
    status, _, _ = _run(app, "/api/v1/presets/x", [b"x" * limits.MANAGEMENT_MAX_BODY])
    assert status == 200 and app.read == limits.MANAGEMENT_MAX_BODY
    status, _, _ = _run(_Reader(), "/api/v1/presets/import", [b"x" * (3 * 1024 * 1024)])
    assert status == 200
