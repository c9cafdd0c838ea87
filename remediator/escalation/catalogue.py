"""Builds the configured notifiers by name from the settings, with the routing that chooses among them."""

from __future__ import annotations

from remediator.escalation.alertmanager import AlertmanagerNotifier
from remediator.escalation.base import Notifier, Notifiers
from remediator.escalation.grafana import GrafanaNotifier
from remediator.escalation.pagerduty import PagerDutyNotifier
from remediator.escalation.slack import SlackNotifier
from remediator.escalation.webhook import WebhookNotifier
from remediator.settings import EscalationSettings


def build_notifiers(settings: EscalationSettings) -> Notifiers:
    notifiers: dict[str, Notifier] = {}
    for name, target in settings.targets.items():
        notifiers[name] = WebhookNotifier(name, target.url, target.headers, target.timeout_s)
    for name, slack in settings.slack.items():
        notifiers[name] = SlackNotifier(
            name, slack.webhook_url.get_secret_value(), slack.channel, slack.timeout_s
        )
    for name, pd in settings.pagerduty.items():
        notifiers[name] = PagerDutyNotifier(name, pd.routing_key.get_secret_value(), pd.url, pd.timeout_s)
    for name, am in settings.alertmanager.items():
        notifiers[name] = AlertmanagerNotifier(
            name, am.url, am.headers, am.silence_while_running, am.alert_ttl_s, am.timeout_s
        )
    for name, grafana in settings.grafana.items():
        notifiers[name] = GrafanaNotifier(
            name, grafana.url, grafana.token.get_secret_value(), grafana.timeout_s
        )
    return Notifiers(notifiers, settings.routing)
