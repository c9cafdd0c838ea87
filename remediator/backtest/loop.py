"""The virtual clock a replay runs on, apart from what is replayed: an ``asyncio`` loop whose time is the
history's and jumps over every idle wait, so the runner's own waits elapse in history's time, in seconds."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")

_IDLE_REAL_S = 0.05
_STUCK_REAL_S = 30.0


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that, when no file is ready, moves the loop's virtual clock to the next timer instead of
    waiting for it."""

    def __init__(self) -> None:
        super().__init__()
        self.jump: Callable[[float], None] = lambda seconds: None
        self._idle = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            self._idle = 0
            return ready
        if timeout is None:
            # Nothing is scheduled: only a file could wake the loop, and nothing in a replay waits on one. A
            # replay that stays so is stuck (a bug): said, rather than waited on forever.
            self._idle += 1
            if self._idle * _IDLE_REAL_S > _STUCK_REAL_S:
                raise RuntimeError(f"the replay waited {_STUCK_REAL_S:g}s with nothing scheduled: stuck")
            return super().select(_IDLE_REAL_S)
        self._idle = 0
        self.jump(timeout)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual and jumps over every idle wait, and whose executor work runs
    inline (so a thread can never be outrun by the virtual clock). ``clock`` is the replayed Unix time.

    ``time()`` counts from 0 at ``start``: a Unix time's float has steps of about 2e-7 s, coarser than the
    loop's clock resolution, and a timer due at such a time might never be reached exactly."""

    def __init__(self, start: float) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        self.start = start
        self.now = 0.0
        selector.jump = self._jump

    def _jump(self, seconds: float) -> None:
        self.now += seconds

    def time(self) -> float:
        return self.now

    def clock(self) -> float:
        """The replayed Unix time (the Clock every part of the replay is given)."""
        return self.start + self.now

    def run_in_executor(  # type: ignore[override]  # any executor: the work runs inline
        self, executor: object, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        future: asyncio.Future[_T] = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as exc:  # delivered to the awaiting coroutine, as a thread's error would be
            future.set_exception(exc)
        return future
