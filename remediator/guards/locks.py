"""Per-target locks: one step at a time on a target, across policies, within this process.

(Across replicas, the store's incident lease does the same job.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class TargetLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str, wait_s: float) -> AsyncIterator[bool]:
        """Yield True with the lock held, or False when it stayed busy for ``wait_s``."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), wait_s)
        except TimeoutError:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()  # kept in the dict: targets come from allow lists, so there are few of them
