"""The engine's small keyed state in the SQLite store: circuit breakers (engine/breakers.py) and the control
table (the pause switch, policy modes, approval requests, the readiness and intake probes). A mixin of
``SqliteStore``, kept apart so store.py stays under the 600-line rule."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class SqliteControl:
    """The breakers and control parts of the Store protocol."""

    async def _run(self, fn: Callable[[sqlite3.Connection], T], synced: bool = True) -> T:
        raise NotImplementedError  # SqliteStore's

    async def breakers_load(self, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        def load(db: sqlite3.Connection) -> dict[str, dict[str, Any]]:
            if names is None:
                rows = db.execute("SELECT name, state FROM breakers")
            else:
                rows = db.execute(
                    "SELECT name, state FROM breakers WHERE name IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(names)),),
                )
            return {r["name"]: json.loads(r["state"]) for r in rows}

        return await self._run(load, synced=False)

    async def breaker_save(self, name: str, state: dict[str, Any] | None, now: float) -> None:
        def save(db: sqlite3.Connection) -> None:
            if state is None:
                db.execute("DELETE FROM breakers WHERE name = ?", (name,))
                return
            db.execute(
                "INSERT INTO breakers (name, state, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                (name, json.dumps(state), now),
            )

        await self._run(save)

    async def control_get(self, key: str) -> str | None:
        def get(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT value FROM control WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row["value"])

        return await self._run(get, synced=False)

    async def control_set(self, key: str, value: str, now: float) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO control (key, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, value, now),
            )
        )

    async def control_swap(self, key: str, expected: str, value: str, now: float) -> bool:
        def swap(db: sqlite3.Connection) -> bool:
            return (
                db.execute(
                    "UPDATE control SET value = ?, updated_at = ? WHERE key = ? AND value = ?",
                    (value, now, key, expected),
                ).rowcount
                == 1
            )

        return await self._run(swap)
