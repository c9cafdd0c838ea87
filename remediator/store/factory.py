"""Picks the store from the settings: PostgreSQL when a URL is set (several replicas), else the SQLite file."""

from __future__ import annotations

from remediator.settings import Settings
from remediator.store.base import Store
from remediator.store.postgres import PostgresStore
from remediator.store.sqlite import SqliteStore


def build_store(settings: Settings) -> Store:
    if settings.store.url is not None:
        return PostgresStore(settings.store.url.get_secret_value())
    return SqliteStore(settings.store_path)
