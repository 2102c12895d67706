import sqlite3

import pytest

from corral.errors import Conflict, NotFound, UsageError
from corral.settings import load_settings
from corral.store import builds, instances
from corral.store.db import MIGRATIONS, Store, connect, schema_version
from corral.store.instances import InstanceRecord


def test_settings_precedence(corral_home, monkeypatch):
    corral_home.mkdir(parents=True)
    (corral_home / "config.toml").write_text(
        'port = 9000\nprobe_interval = 2.5\nport_range = "9100-9200"\n'
    )
    s = load_settings()
    assert (s.port, s.probe_interval, s.ports) == (9000, 2.5, (9100, 9200))
    monkeypatch.setenv("CORRAL_PORT", "9001")
    assert load_settings().port == 9001
    assert load_settings(port=9002).port == 9002
    assert s.home == corral_home and s.db_path == corral_home / "corral.db"


def test_settings_errors_are_one_line(corral_home, monkeypatch):
    corral_home.mkdir(parents=True)
    (corral_home / "config.toml").write_text("bogus = 1\n")
    with pytest.raises(UsageError, match="unknown setting"):
        load_settings()
    (corral_home / "config.toml").write_text("port = [\n")
    with pytest.raises(UsageError):
        load_settings()
    (corral_home / "config.toml").write_text("")
    monkeypatch.setenv("CORRAL_PORT", "abc")
    with pytest.raises(UsageError, match="port"):
        load_settings()
    monkeypatch.delenv("CORRAL_PORT")
    monkeypatch.setenv("CORRAL_PORT_RANGE", "9000-8000")
    with pytest.raises(UsageError):
        _ = load_settings().ports


def test_migrations_are_recorded_and_idempotent(tmp_path):
    db = tmp_path / "c.db"
    conn = connect(db)
    assert schema_version(conn) == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    conn = connect(db)  # second open applies nothing new
    rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
    assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))


def test_instance_table_roundtrip_and_conflicts(tmp_path):
    store = Store(tmp_path / "c.db")
    rec = InstanceRecord(
        name="a",
        model="/m.gguf",
        binary="/b",
        port=8081,
        flags=[["--ctx-size", "4096"]],
        argv=["/b", "--port", "8081"],
    )
    instances.insert(store, rec)
    got = instances.get(store, "a")
    assert got.flags == [["--ctx-size", "4096"]] and got.argv == ["/b", "--port", "8081"]
    with pytest.raises(Conflict, match="already exists"):
        instances.insert(store, InstanceRecord(name="a", model="/m", binary="/b", port=8082))
    with pytest.raises(Conflict, match="port 8081"):
        instances.insert(store, InstanceRecord(name="b", model="/m", binary="/b", port=8081))
    instances.update(store, "a", state="ready", pid=42)
    assert instances.get(store, "a").pid == 42
    with pytest.raises(ValueError):
        instances.update(store, "a", nonsense=1)
    with pytest.raises(NotFound):
        instances.get(store, "zzz")
    instances.delete(store, "a")
    assert instances.list_all(store) == []


def test_failed_transaction_rolls_back(tmp_path):
    store = Store(tmp_path / "c.db")
    with pytest.raises(sqlite3.IntegrityError):
        with store.tx() as conn:
            conn.execute("INSERT INTO builds (path, added_at) VALUES ('/x', 0)")
            conn.execute("INSERT INTO builds (path, added_at) VALUES ('/x', 0)")
    assert builds.list_all(store) == []


def test_builds_default(tmp_path):
    store = Store(tmp_path / "c.db")
    a = builds.add(store, "/a", "v1")
    b = builds.add(store, "/b", "v2")
    assert a.is_default and not b.is_default
    builds.set_default(store, b.id)
    assert builds.default(store).path == "/b"
    with pytest.raises(NotFound):
        builds.set_default(store, 99)


def test_upgrade_from_schema_1_keeps_instances(tmp_path):
    """A database written by the first release gains the version column, rows intact."""
    from corral.store import db as dbmod

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
    for stmt in dbmod._statements(dbmod.M001_INITIAL):
        conn.execute(stmt)
    conn.execute("INSERT INTO schema_migrations VALUES (1, 0)")
    conn.execute(
        "INSERT INTO instances (name, model, binary, port, created_at, updated_at) "
        "VALUES ('old', '/m.gguf', '/b', 8081, 1, 1)"
    )
    conn.close()
    store = Store(path)
    rec = instances.get(store, "old")
    assert rec.model == "/m.gguf" and rec.version is None
    instances.update(store, "old", version="version: 1 (abc)")
    assert instances.get(store, "old").version == "version: 1 (abc)"
    assert schema_version(store.conn) == len(MIGRATIONS)
