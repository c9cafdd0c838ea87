"""Log lines about an incident carry its id, policy and target as fields (issue 13): a pipeline filters on them
in JSON, and a person sees them in text."""

from __future__ import annotations

import json
import logging

from remediator.domain.incidents import Incident
from remediator.logs import JsonFormatter, TextFormatter


def record(extra: dict[str, object] | None = None) -> logging.LogRecord:
    made = logging.getLogger("remediator.engine.runner").makeRecord(
        "remediator.engine.runner",
        logging.INFO,
        __file__,
        1,
        "incident %d: restarted",
        (7,),
        None,
        extra=extra,
    )
    return made


def test_incident_fields_appear_in_json_and_in_text() -> None:
    incident = Incident(7, "database-down", "db", "active", "critical", 0.0, 0.0)
    entry = json.loads(JsonFormatter().format(record(incident.log_fields)))
    assert (entry["incident"], entry["policy"], entry["target"]) == (7, "database-down", "db")
    assert entry["logger"] == "remediator.engine.runner" and entry["msg"] == "incident 7: restarted"
    text = TextFormatter().format(record(incident.log_fields))
    assert text.endswith("incident 7: restarted [incident=7 policy=database-down target=db]")


def test_a_line_about_no_incident_has_no_fields() -> None:
    assert "incident" not in json.loads(JsonFormatter().format(record()))
    assert not TextFormatter().format(record()).endswith("]")


def test_a_fleet_incident_names_its_host_and_a_single_host_does_not_repeat_it() -> None:
    on_web = Incident(8, "database-down", "db", "active", "critical", 0.0, 0.0, host="web-1")
    entry = json.loads(JsonFormatter().format(record(on_web.log_fields)))
    assert entry["host"] == "web-1"
    assert TextFormatter().format(record(on_web.log_fields)).endswith("target=db host=web-1]")
    single = Incident(7, "database-down", "db", "active", "critical", 0.0, 0.0)
    assert "host" not in json.loads(JsonFormatter().format(record(single.log_fields)))
