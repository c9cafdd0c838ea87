"""The notifier protocols: deliver one escalation, or raise NotifyError so the outbox retries it.

Every notifier sends escalations. Some also keep something open on their side until the incident ends (a
PagerDuty incident, a firing ``RemediationFailed`` alert, a Slack thread of events): those are ``Resolver``s and
are told when the incident resolves. An Alertmanager can also silence the original alert while remediation
runs: a ``Silencer``. Each call raises NotifyError on any failure; the outbox retries until delivered.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from remediator.domain.story import EscalationPayload
from remediator.settings import RoutingSettings


class Notifier(Protocol):
    """One named destination for escalations."""

    @property
    def name(self) -> str: ...

    async def send(self, payload: EscalationPayload, dedup_key: str) -> None:
        """Deliver once; raise NotifyError on any failure. Receivers drop repeats by ``dedup_key``."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Resolver(Protocol):
    """A notifier that is told when an incident it was sent resolves (``payload["event"] == "resolve"``)."""

    @property
    def name(self) -> str: ...

    async def resolve(self, payload: EscalationPayload, dedup_key: str) -> None: ...


@runtime_checkable
class Pager(Protocol):
    """A notifier that wakes a person up: skipped for the priorities that never page (P3, P4)."""

    @property
    def pages(self) -> bool: ...


@runtime_checkable
class Annotator(Protocol):
    """A notifier that records every action remediator runs, and every escalation (Grafana annotations): each
    escalation goes to it besides the routed ones, and each action's result is stored for it in the outbox
    (``payload["event"] == "action"``)."""

    @property
    def annotates_actions(self) -> bool: ...

    async def annotate(self, payload: EscalationPayload, dedup_key: str) -> None: ...


@runtime_checkable
class Silencer(Protocol):
    """A notifier that can silence the original alert while remediation runs."""

    @property
    def silence_while_running(self) -> bool: ...

    async def silence(self, matchers: dict[str, str], starts_at: float, ends_at: float, comment: str) -> str:
        """Create a silence of the alerts whose labels equal ``matchers``; returns its id."""
        ...

    async def expire_silence(self, silence_id: str) -> None:
        """End the silence now; a silence that is already gone counts as expired."""
        ...


def annotates(notifier: object) -> bool:
    """True for notifiers that record every action and escalation (Grafana annotations)."""
    return isinstance(notifier, Annotator) and notifier.annotates_actions


def pages(notifier: object) -> bool:
    """True for notifiers that page a person (PagerDuty)."""
    return isinstance(notifier, Pager) and notifier.pages


class Notifiers(dict[str, Notifier]):
    """The notifiers by name, and the routing settings that say which of them an escalation goes to."""

    def __init__(self, notifiers: dict[str, Notifier], routing: RoutingSettings | None = None) -> None:
        super().__init__(notifiers)
        self.routing = routing or RoutingSettings()
