"""The backtest cannot drift from serve: the same notifications, posted at the same moments to a real daemon
(App, its webhook over HTTP, with recording actions and notifiers in place of Docker and the notifiers) and
replayed by the backtest in virtual time, lead to the same decisions: the same incidents, the same actions on the
same targets at the same offsets, the same refusals by reason, verifications, escalations and pages. Both are read
by the same function (``backtest.summarize``) from their own store, and the numbers are also checked against the
ones worked out by hand, so two empty answers cannot agree."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from engine_rig import RecordingAction, RecordingNotifier
from helpers import TOKEN, alert, notification

from remediator import backtest
from remediator.actions.docker import LogsParams, RestartParams
from remediator.domain.alerts import Notification

POLICY = """
name: database-down
match: [alertname = DatabaseDown]
target: {kind: container, from_label: container, allow: ["db-[1-3]"]}
limits: {cooldown_s: 4, flapping: {count: 3, window_s: 30}, max_actions: {count: 10, window_s: 60}}
steps:
  - diagnose: container.logs
  - act: container.restart
    verify: {resolved_within_s: 2}
    attempts: 2
  - escalate: oncall
"""


def _episode(container: str, starts_at: str, status: str) -> dict[str, Any]:
    return alert(status=status, fingerprint=f"fp-{container}", starts_at=starts_at, container=container)


EP1, EP2, EP3 = "2026-11-23T10:00:00Z", "2026-11-23T10:00:01Z", "2026-11-23T10:00:03Z"

# (seconds from the start, body): what happens, worked out by hand below.
TIMELINE: list[tuple[float, dict[str, Any]]] = [
    (0.0, notification(_episode("db-1", EP1, "firing"))),  # restart; verified by the resolved at 0.8
    (0.0, notification(_episode("db-9", EP1, "firing"))),  # outside the allow list: escalated at intake
    (0.0, notification(_episode("db-2", EP1, "firing"))),  # restart twice, never resolved in 2 s: escalated
    (0.8, notification(_episode("db-1", EP1, "resolved"))),
    (1.4, notification(_episode("db-1", EP1, "firing"))),  # a late copy of a resolved episode: stale
    (2.4, notification(_episode("db-1", EP2, "firing"))),  # 2.4 s after db-1's restart: cooldown (4 s)
    (3.4, notification(_episode("db-1", EP2, "resolved"))),
    (6.4, notification(_episode("db-2", EP1, "resolved"))),
    (7.2, notification(_episode("db-1", EP3, "firing"))),  # the third incident on db-1 in 30 s: flapping
    (8.2, notification(_episode("db-1", EP3, "resolved"))),
    (8.2, notification(_episode("db-3", EP1, "firing"))),  # restart; verified by the resolved at 9.2
    (9.2, notification(_episode("db-3", EP1, "resolved"))),
]
END_S = 9.2

ENV = {
    "REMEDIATOR_ESCALATION__TARGETS": '{"oncall": {"url": "http://127.0.0.1:9/never-called"}}',
    "REMEDIATOR_ESCALATION__PAGERDUTY": '{"pager": {"routing_key": "never-used"}}',
    "REMEDIATOR_ESCALATION__ROUTING": '{"routes": {"P1": ["pager"]}}',
    "REMEDIATOR_PROMETHEUS__URL": "",
}


class PagingRecorder(RecordingNotifier):
    pages = True


async def _serve(start_app: Callable[..., Any]) -> tuple[dict[str, Any], Any]:
    app = await start_app(policies={"database-down.yaml": POLICY}, **ENV)
    # Recording stand-ins for Docker and the notifiers, in the dicts the runner and the outbox hold.
    restart = RecordingAction("container.restart", "act", RestartParams, backend="docker")
    logs = RecordingAction("container.logs", "diagnose", LogsParams, backend="docker")
    app.actions.update({restart.name: restart, logs.name: logs})
    app.notifiers.update({"oncall": RecordingNotifier("oncall"), "pager": PagingRecorder("pager")})
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"http://127.0.0.1:{app.port}/alerts"
    loop = asyncio.get_running_loop()
    base = loop.time()
    started = time.time()
    async with aiohttp.ClientSession() as http:
        for offset, body in TIMELINE:
            await asyncio.sleep(max(0.0, base + offset - loop.time()))
            async with http.post(url, json=body, headers=headers) as response:
                assert response.status == 200, await response.text()
    await asyncio.sleep(max(0.0, base + END_S + 1.5 - loop.time()))
    for _ in range(100):
        if not app.runner.running:
            break
        await asyncio.sleep(0.1)
    assert app.runner.running == 0
    summary = await backtest.summarize(app.store, app.policies, app.settings)
    assert len(restart.calls) == len(summary["policies"]["database-down"]["actions"])
    return _relative(summary, started), app


def _relative(summary: dict[str, Any], start: float) -> dict[str, Any]:
    row = summary["policies"]["database-down"]
    row["actions"] = sorted((a["ts"] - start, a["step"], a["target"], a["host"]) for a in row["actions"])
    row.pop("busiest_hour")
    return row


async def test_the_backtest_decides_as_the_daemon_does(start_app: Callable[..., Any]) -> None:
    daemon, app = await _serve(start_app)
    start = 1_795_428_000.0  # any time: the replay's clock starts there
    history = [backtest.Delivery(start + t, Notification.model_validate(body)) for t, body in TIMELINE]
    report = await asyncio.to_thread(backtest.run, history, app.policies, app.settings)
    assert report["problems"] == []
    replayed = _relative({"policies": report["policies"]}, start)
    replayed.pop("healthy_floor")

    # By hand: db-1 restarted at 0 (verified), db-2 twice (0 and 2 s, not recovered either time, escalated),
    # db-3 at 8.2 (verified); db-1's second incident refused by the cooldown, its third as flapping; db-9
    # refused at intake; the late copy at 1.4 s opened nothing. Every escalation is P1 (severity critical), and
    # each goes to the pager too.
    expected_actions = [
        (0.0, "container.restart", "db-1", "default"),
        (0.0, "container.restart", "db-2", "default"),
        (2.0, "container.restart", "db-2", "default"),
        (8.2, "container.restart", "db-3", "default"),
    ]
    assert _near(replayed["actions"], expected_actions)
    assert replayed["incidents"] == 6
    assert replayed["refused_targets"] == 1
    assert replayed["diagnoses"] == 5
    assert replayed["refusals"] == {"allow_list": 1, "cooldown": 1, "flapping": 1}
    assert (replayed["verified"], replayed["not_recovered"]) == (2, 2)
    assert replayed["escalations"] == {"P1": 4}
    assert replayed["pages"] == {"P1": 4}

    # And the daemon, in real time, decided exactly the same, its actions at the same offsets (within what a
    # webhook round trip and intake's batching take).
    assert _near(daemon.pop("actions"), expected_actions)
    replayed.pop("actions")
    assert daemon == replayed


def _near(actions: list[tuple[float, str, str, str]], expected: list[tuple[float, str, str, str]]) -> bool:
    """The same actions in the same order, each within 0.5 s of its expected offset."""
    assert [a[1:] for a in actions] == [e[1:] for e in expected], actions
    assert all(abs(a[0] - e[0]) < 0.5 for a, e in zip(actions, expected, strict=True)), actions
    return True
