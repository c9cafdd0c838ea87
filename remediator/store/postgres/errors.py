"""What asyncpg's failures mean to remediator: the server is unavailable (retry as long as it lasts), or an
unknown error. A value PostgreSQL refuses (DataError) is handled where the transaction runs."""

from __future__ import annotations

import asyncpg

from remediator.errors import StoreError, StoreUnavailable

# Everything a dropped connection, a restarting server or a full disk raises through asyncpg: asyncpg's own
# errors (InternalClientError covers "cannot switch to state" on a connection the server closed), the socket's.
FAILURES = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# Of those, the ones that say the server or the connection is unavailable (down, restarting, full, shutting
# down, a deadlock to retry), not that something is wrong with what was written.
UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.TransactionRollbackError,
    asyncpg.LockNotAvailableError,  # a lock_timeout: another session holds the lock, not a bad value
    asyncpg.CannotConnectNowError,
    OSError,
    TimeoutError,
)


def mapped(exc: BaseException) -> StoreError:
    if isinstance(exc, UNAVAILABLE):
        return StoreUnavailable(f"postgres: {exc}")
    return StoreError(f"postgres: {exc}")
