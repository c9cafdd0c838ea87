"""A circuit breaker as a pure state machine over an injected time: closed, open, half-open.

Closed: actions run; failures within ``window_s`` are counted. ``failures`` of them open the breaker. Open:
every action is refused until ``open_s`` has passed. Then half-open: exactly one probe runs; its success
closes the breaker, its failure opens it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

BreakerStatus = Literal["closed", "open", "half_open"]
GAUGE = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class BreakerConfig:
    failures: int = 5
    window_s: float = 60.0
    open_s: float = 30.0


@dataclass(frozen=True)
class Breaker:
    status: BreakerStatus = "closed"
    failures: tuple[float, ...] = field(default_factory=tuple)
    opened_at: float | None = None
    probing_since: float | None = None

    def idle(self, now: float, config: BreakerConfig) -> bool:
        """Closed with no failure inside the window: the same as a breaker never seen, so it need not be kept
        (one per target would otherwise pile up forever)."""
        return self.status == "closed" and all(now - t >= config.window_s for t in self.failures)

    def admit(self, now: float, config: BreakerConfig) -> tuple[bool, Breaker]:
        """Whether one action may run now, and the state after admitting it."""
        if self.status == "closed":
            return True, self
        if self.status == "open":
            if self.opened_at is not None and now - self.opened_at < config.open_s:
                return False, self
            return True, replace(self, status="half_open", probing_since=now)
        # half-open: one probe at a time; a probe that never reported back is replaced after open_s
        if self.probing_since is not None and now - self.probing_since < config.open_s:
            return False, self
        return True, replace(self, probing_since=now)

    def record(self, ok: bool, now: float, config: BreakerConfig) -> Breaker:
        """The state after one action's result."""
        if ok:
            return Breaker()
        if self.status == "half_open":
            return Breaker(status="open", failures=(now,), opened_at=now)
        recent = (*(t for t in self.failures if now - t < config.window_s), now)
        if len(recent) >= config.failures:
            return Breaker(status="open", failures=recent, opened_at=now)
        return replace(self, failures=recent)
