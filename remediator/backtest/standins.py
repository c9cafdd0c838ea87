"""The only parts of a replay that are not the daemon's own: the edges, which must touch nothing. Actions that
answer "would have run", notifiers that record without sending, and the probe that reads a ladder's checks
from history."""

from __future__ import annotations

import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from remediator.actions.base import Action, Params, ProbeResult
from remediator.actions.catalogue import SPECS
from remediator.actions.probes import instant_answer
from remediator.backtest.prometheus import http_get
from remediator.domain.clock import Clock
from remediator.escalation.base import Notifiers
from remediator.settings import Settings

# The backend each action reports (its breaker's name), as the real actions of the catalogue name it.
_BACKENDS = {"postgres": "postgres", "http": "http"}


@dataclass
class StandInAction:
    """An action of the catalogue that runs nothing: the step is recorded by the runner as it would be."""

    name: str
    kind: Literal["act", "diagnose"]
    params_model: type[Params]
    backend: str

    async def run(self, target: str, params: Params, host: str = "default") -> str:
        return f"backtest: {self.name} would have run on {target} (host {host})"


@dataclass
class StandInNotifier:
    """A notifier that sends nothing; ``pages`` as the real one of that name (PagerDuty pages)."""

    name: str
    pages: bool = False
    sent: int = 0

    async def send(self, payload: Any, dedup_key: str) -> None:
        self.sent += 1

    async def close(self) -> None:
        return None


def stand_in_actions() -> dict[str, Action]:
    """Every action of the catalogue, by name, with the real one's kind, parameters and backend."""
    actions: dict[str, Action] = {}
    for name, spec in SPECS.items():
        params = spec.params
        assert issubclass(params, Params), name  # every catalogue action's parameters are Params
        backend = _BACKENDS.get(name.split(".")[0], "docker")
        actions[name] = StandInAction(name, spec.kind, params, backend)
    return actions


def stand_in_notifiers(settings: Settings) -> Notifiers:
    """The configured notifiers' names, each a stand-in that pages when the real one does, with the routing."""
    escalation = settings.escalation
    paging = set(escalation.pagerduty)
    return Notifiers(
        {name: StandInNotifier(name, name in paging) for name in sorted(escalation.notifier_names())},
        escalation.routing,
    )


@dataclass
class HistoryProbe:
    """The checks of a ladder, read from history: a healthy floor's query at the replayed time (when a
    Prometheus is given; otherwise not evaluable and taken to hold), and no verification check (the alert's own
    resolution decides)."""

    floors: dict[int, str]
    """id() of each policy's healthy-floor check -> the policy's name."""
    clock: Clock
    prometheus_url: str | None = None
    timeout_s: float = 10.0
    evaluated: Counter[str] = field(default_factory=Counter)
    not_evaluable: Counter[str] = field(default_factory=Counter)

    async def check(self, spec: Any) -> ProbeResult:
        policy = self.floors.get(id(spec))
        if policy is None:
            return ProbeResult(None, "not evaluated in a backtest: the alert's resolution decides")
        if self.prometheus_url is None:
            self.not_evaluable[policy] += 1
            return ProbeResult(True, "healthy floor not evaluable without --prometheus: taken to hold")
        self.evaluated[policy] += 1
        # Blocking, on purpose: the virtual clock must not move while Prometheus answers.
        query = urllib.parse.urlencode({"query": spec.query, "time": f"{self.clock():.3f}"})
        try:
            status, raw = http_get(f"{self.prometheus_url.rstrip('/')}/api/v1/query?{query}", self.timeout_s)
        except OSError as exc:
            return ProbeResult(None, f"prometheus unreachable: {exc}")
        return instant_answer(status, raw)
