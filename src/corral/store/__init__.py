"""SQLite store: one database file under CORRAL_HOME, numbered migrations, WAL."""

from corral.store.db import Store, connect

__all__ = ["Store", "connect"]
