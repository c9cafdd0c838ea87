"""Every decision about an incident is a log line carrying its id, policy and target (issue 16 item 2): a
person reading the log, or a pipeline filtering the JSON, can follow one incident's story."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from engine_rig import Rig, make_policy, start
from helpers import alert, eventually


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
