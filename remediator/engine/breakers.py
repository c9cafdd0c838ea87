"""Circuit breakers as the store keeps them: shared by every replica, cached here, bounded.

The gate asks them before an action (one per backend, one per target); the outbox asks them before a delivery
(one per notifier). The pure state machine is ``guards.breaker``; this module loads and saves its states and
keeps the metric. Only breakers that are not idle are kept (in the cache, the store and the metric), so one
breaker per target that once failed cannot pile up (docs/safety.md, "Bounded by construction").
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from remediator.domain.clock import Clock
from remediator.domain.policies import DOCKER_KINDS
from remediator.guards.breaker import GAUGE, Breaker, BreakerConfig
from remediator.guards.refusal import Refusal
from remediator.metrics import Metrics
from remediator.settings import DEFAULT_DOCKER_HOST
from remediator.store.base import Store

logger = logging.getLogger(__name__)


def host_of(breaker: str) -> str:
    """The Docker host a breaker is about (its metric's ``host`` label): ``backend:docker:web-1`` -> web-1,
    ``container:web-1/sms-db`` -> web-1, ``container:sms-db`` -> default; "" for a non-Docker breaker. Only
    configured hosts ever get a breaker, so the label's values are bounded by the settings."""
    kind, _, rest = breaker.partition(":")
    if kind == "backend":
        backend, _, host = rest.partition(":")
        return host if backend == "docker" else ""
    if kind in DOCKER_KINDS:
        return rest.split("/", 1)[0] if "/" in rest else DEFAULT_DOCKER_HOST
    return ""


LEGACY_NAMES = {"backend:docker": f"backend:docker:{DEFAULT_DOCKER_HOST}"}
"""Breaker names of earlier versions and what they are called now."""


class Breakers:
    """The breakers of this daemon, by name (``backend:docker:default``, ``container:db``, ``notify:oncall``)."""

    def __init__(self, store: Store, config: BreakerConfig, metrics: Metrics, clock: Clock) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._cache: dict[str, Breaker] = {}

    def snapshot(self) -> dict[str, Breaker]:
        """The breakers that are not idle, as last loaded."""
        return dict(self._cache)

    def get(self, name: str) -> Breaker:
        return self._cache.get(name, Breaker())

    async def load(self, names: Sequence[str] | None = None) -> None:
        """States as the last run (or another replica) left them: all at start, then only the ones a decision
        needs (replicas share breakers: the store is the truth, this process only caches)."""
        stored = await self.store.breakers_load(names)
        now = self.clock()
        if names is None:
            await self._rename_legacy(stored, now)
        for name in stored.keys() | set(names or ()):
            raw = stored.get(name)
            breaker = Breaker() if raw is None else _breaker_of(raw)
            if breaker.idle(now, self.config):
                self._forget(name)
                if raw is not None:  # idle in the store too: no row per target that failed once long ago
                    await self.store.breaker_save(name, None, now)
            else:
                self._cache[name] = breaker
                self.metrics.breaker_state.labels(name, host_of(name)).set(GAUGE[breaker.status])

    async def _rename_legacy(self, stored: dict[str, dict[str, Any]], now: float) -> None:
        """A breaker stored under a name from before the fleet (``backend:docker``) carries on under its new
        name: an open one stays open (a failing daemon gets no fresh burst of actions after an upgrade), and the
        old name, which nothing asks any more, does not stay open in the metrics forever."""
        for old, new in LEGACY_NAMES.items():
            state = stored.pop(old, None)
            if state is None:
                continue
            if new not in stored:
                stored[new] = state
                await self.store.breaker_save(new, state, now)
            await self.store.breaker_save(old, None, now)

    async def admit(self, *names: str) -> Refusal | None:
        """None when every breaker of ``names`` lets one action through now; a half-open one is probed."""
        await self.load(names)
        now = self.clock()
        staged: list[tuple[str, Breaker]] = []
        for name in names:
            allowed, after = self.get(name).admit(now, self.config)
            if not allowed:
                return Refusal("breaker_open", f"circuit breaker {name} is open after repeated failures")
            staged.append((name, after))
        for name, after in staged:  # only once every breaker agreed, so a refusal consumes no probe
            await self._set(name, after)
        return None

    async def record(self, results: Mapping[str, bool]) -> None:
        """The outcome for each breaker named (True: it worked), loaded once for all of them."""
        await self.load(list(results))
        for name, ok in results.items():
            await self._set(name, self.get(name).record(ok, self.clock(), self.config))

    def _forget(self, name: str) -> None:
        if self._cache.pop(name, None) is not None:
            with contextlib.suppress(KeyError):
                self.metrics.breaker_state.remove(name, host_of(name))

    async def _set(self, name: str, breaker: Breaker) -> None:
        before = self._cache.get(name, Breaker())
        idle = breaker.idle(self.clock(), self.config)
        if idle:
            self._forget(name)
        else:
            self._cache[name] = breaker
            self.metrics.breaker_state.labels(name, host_of(name)).set(GAUGE[breaker.status])
        if breaker != before:
            await self.store.breaker_save(name, None if idle else dataclasses.asdict(breaker), self.clock())
        if breaker.status != before.status:
            await self.store.audit(None, f"breaker_{breaker.status}", {"breaker": name}, self.clock())
            log = logger.warning if breaker.status == "open" else logger.info
            log("circuit breaker %s is now %s", name, breaker.status)


def _breaker_of(raw: Mapping[str, object]) -> Breaker:
    failures = raw["failures"]
    assert isinstance(failures, list)
    return Breaker(
        status=raw["status"],  # type: ignore[arg-type]
        failures=tuple(float(t) for t in failures),
        opened_at=raw["opened_at"],  # type: ignore[arg-type]
        probing_since=raw["probing_since"],  # type: ignore[arg-type]
    )
