"""Every decision about an incident is a log line carrying its id, policy and target (issue 16 item 2): a
person reading the log, or a pipeline filtering the JSON, can follow one incident's story."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from engine_rig import Rig, make_policy, start
from helpers import alert, eventually

from remediator.domain.policies import Policy


async def test_an_incident_s_story_is_in_the_log(
    tmp_path: Path, rigs: list[Rig], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="remediator")
    rig = await start(rigs, tmp_path, make_policy(attempts=1, within=0.05))
    rig.send(alert(container="db"))
    await eventually(lambda: rig.notifier.sent)
    rig.send(alert(container="db", status="resolved"))
    await rig.settle()
    await eventually(lambda: any("resolved after" in r.getMessage() for r in caplog.records))
    story = [r for r in caplog.records if getattr(r, "incident", None) == 1]
    said = " | ".join(r.getMessage() for r in story)
    for part in (
        "opened",
        "container.restart on db",
        "did not recover",
        "escalated to oncall",
        "resolved after",
    ):
        assert part in said, (part, said)
    assert all(getattr(r, "policy", "database-down") == "database-down" for r in story)


async def test_a_check_that_keeps_failing_says_why_at_once_and_then_now_and_then(
    tmp_path: Path, rigs: list[Rig], caplog: pytest.LogCaptureFixture
) -> None:
    """A verification whose Prometheus is not there said nothing for its whole window (issue 16): now the
    reason is logged at once, and not once per poll."""
    caplog.set_level(logging.INFO, logger="remediator")
    policy = Policy.model_validate(
        {
            "name": "database-down",
            "match": ["alertname = DatabaseDown"],
            "target": {"kind": "container", "from_label": "container", "allow": ["db"]},
            "steps": [
                {
                    "act": "container.restart",
                    "verify": {"within_s": 1.5, "interval_s": 0.1, "prometheus": {"query": "up == 1"}},
                },
                {"escalate": "oncall"},
            ],
        }
    )
    rig = await start(rigs, tmp_path, policy)
    rig.send(alert(container="db"))
    await eventually(lambda: rig.notifier.sent, timeout=20)
    said = [r for r in caplog.records if "check does not hold yet" in r.getMessage()]
    assert said and "no prometheus configured" in said[0].getMessage()
    assert getattr(said[0], "incident", None) == 1 and said[0].levelno == logging.WARNING
    assert len(said) <= 2  # ~15 polls in the window, one reason: said once
