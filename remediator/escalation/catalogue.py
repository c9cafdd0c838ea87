"""Builds the configured notifiers by name from the settings."""

from __future__ import annotations

from remediator.escalation.base import Notifier
from remediator.escalation.webhook import WebhookNotifier
from remediator.settings import EscalationSettings


def build_notifiers(settings: EscalationSettings) -> dict[str, Notifier]:
    return {
        name: WebhookNotifier(name, t.url, t.headers, t.timeout_s) for name, t in settings.targets.items()
    }
