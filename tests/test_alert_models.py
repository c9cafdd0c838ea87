"""The webhook models read what a real Alertmanager (0.25, captured once on this machine) sends."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from remediator.domain.alerts import Notification

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> Notification:
    return Notification.model_validate_json((FIXTURES / name).read_text())


def test_a_real_firing_notification() -> None:
    n = load("alertmanager_v4_firing.json")
    assert n.version == "4" and n.status == "firing" and n.receiver == "rem"
    assert n.group_key.startswith("{}:") and n.truncated_alerts == 0
    assert n.group_labels["alertname"] == "DatabaseDown"
    assert n.common_labels["container"] == "sms-db"
    assert n.common_annotations["runbook_url"] == "https://runbooks.example.com/DatabaseDown"
    assert n.external_url.startswith("http://")
    (alert,) = n.alerts
    assert alert.status == "firing" and alert.name == "DatabaseDown"
    assert alert.labels["container"] == "sms-db" and alert.labels["severity"] == "critical"
    assert alert.annotations["summary"] == "PostgreSQL is down"
    assert alert.starts_at.tzinfo is not None and alert.starts_at.year >= 2026
    assert alert.ends_at == datetime(1, 1, 1, tzinfo=UTC)  # Alertmanager's "not ended" zero time
    assert alert.generator_url.startswith("http://")
    assert len(alert.fingerprint) == 16


def test_a_real_resolved_notification_keeps_the_identity_of_the_firing() -> None:
    firing = load("alertmanager_v4_firing.json").alerts[0]
    resolved = load("alertmanager_v4_resolved.json")
    assert resolved.status == "resolved"
    (alert,) = resolved.alerts
    assert alert.status == "resolved"
    assert alert.fingerprint == firing.fingerprint and alert.starts_at == firing.starts_at
    assert alert.ends_at is not None and alert.ends_at > alert.starts_at


def test_every_top_level_field_of_the_real_payload_is_modelled() -> None:
    raw = json.loads((FIXTURES / "alertmanager_v4_firing.json").read_text())
    aliases = {f.alias or name for name, f in Notification.model_fields.items()}
    assert set(raw) == aliases
    alert_aliases = {
        f.alias or name
        for name, f in type(load("alertmanager_v4_firing.json").alerts[0]).model_fields.items()
    }
    assert set(raw["alerts"][0]) == alert_aliases


def test_a_payload_missing_the_alerts_is_refused() -> None:
    raw = json.loads((FIXTURES / "alertmanager_v4_firing.json").read_text())
    del raw["alerts"]
    with pytest.raises(ValidationError, match="alerts"):
        Notification.model_validate(raw)
