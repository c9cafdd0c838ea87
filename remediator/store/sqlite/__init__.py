"""The default store: one SQLite file, one connection, used from the event loop (store.py); its schema
(schema.py), how intake's decisions are written (intake.py), and the grouped WAL flush (wal.py)."""

from remediator.store.sqlite.store import SqliteStore as SqliteStore
