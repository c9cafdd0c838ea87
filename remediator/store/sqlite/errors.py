"""What a failed SQLite statement means to remediator (docs/safety.md, L1)."""

from __future__ import annotations

import sqlite3

from remediator.errors import StoreDataError, StoreError, StoreUnavailable

# The disk, not the data: a full or read-only disk, a file another process holds, an I/O error.
UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
    }
)


def mapped(exc: sqlite3.Error) -> StoreError:
    """What a failed statement means to the caller: the store is unavailable (retry as long as it lasts), this
    value can never be stored (one connection, one writer: a constraint fails the same way again), or unknown."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in UNAVAILABLE:
        return StoreUnavailable(f"sqlite: {exc}")
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return StoreDataError(f"sqlite cannot store a value: {exc}")
    return StoreError(f"sqlite: {exc}")
