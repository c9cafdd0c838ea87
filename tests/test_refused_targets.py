"""A target the allow list refuses is never acted on, by any path (issue 19 item 1): a burst of refused alerts
naming real containers outside every allow list, with a short lease so the lease keeper runs many times; and
the runner's last-moment check, which refuses a target the policy (as loaded now) does not admit."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from helpers import alert, eventually, notification, post_alerts
from realparts import DockerDaemon
from test_replicas import restarts

POLICY = """\
name: database-down
match: [alertname = DatabaseDown]
target: {kind: container, from_label: container, allow: ["db-[0-9]+"]}
steps:
  - diagnose: container.logs
  - act: container.restart
    verify: {resolved_within_s: 1}
  - escalate: log
"""


async def post(app: Any, bodies: list[dict[str, Any]]) -> None:
    assert set(await post_alerts(app.port, bodies)) == {200}


async def test_a_burst_of_refused_targets_never_reaches_docker(
    start_app: Any, docker_daemon: DockerDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    names = [f"payx-{n}" for n in range(20)]
    for name in names:
        await asyncio.to_thread(docker_daemon.run_container, name)
    started = {n: docker_daemon.started_at(n) for n in names}
    since = datetime.now(UTC)
    app = await start_app(
        policies={"db.yaml": POLICY},
        REMEDIATOR_DOCKER__HOST=docker_daemon.host,
        REMEDIATOR_STORE__LEASE_S="1.5",  # the keeper looks for incidents to take over every 0.5 s
    )
    caplog.set_level(logging.INFO, logger="remediator")
    targets = names * 5 + [f"payy-{n}" for n in range(100)]  # real containers and missing ones
    await post(app, [notification(alert(fingerprint=f"f{i}", container=t)) for i, t in enumerate(targets)])
    await eventually(lambda: app.intake.backlog == 0, timeout=60)
    await asyncio.sleep(3)  # six keeper ticks: time to take over what it should not

    incidents = await app.store.list_incidents(limit=1000)
    assert len(incidents) == 120 and {i.status for i in incidents} == {"escalated"}
    assert all("outside the allow list" in i.reason for i in incidents)
    assert not [r for r in caplog.records if "took over" in r.getMessage()]
    assert app.runner.running == 0
    assert {n: docker_daemon.started_at(n) for n in names} == started
    assert await asyncio.to_thread(restarts, docker_daemon, since) == {}
    for incident in incidents[:5]:
        assert await app.store.steps(incident.id) == []  # not even a diagnosis read their logs


async def test_a_takeover_never_acts_on_a_target_the_policy_does_not_admit(
    start_app: Any, docker_daemon: DockerDaemon
) -> None:
    from remediator.store.base import AlertRef, Firing

    await asyncio.to_thread(docker_daemon.run_container, "db-7", command=SECRET_COMMAND)
    before = docker_daemon.started_at("db-7")
    narrow = POLICY.replace('allow: ["db-[0-9]+"]', 'allow: ["db-1"]')
    app = await start_app(
        policies={"db.yaml": narrow},
        REMEDIATOR_DOCKER__HOST=docker_daemon.host,
        REMEDIATOR_STORE__LEASE_S="1.5",
    )
    # An active incident on db-7, as a replica with another version of the policy left it when it died: this
    # daemon's keeper takes it over, and its policy (as loaded here) does not admit db-7.
    ref = AlertRef(
        "h1", "2026-11-23T10:00:00+00:00", {"alertname": "DatabaseDown", "container": "db-7"}, {}, 1.0
    )
    await app.store.record_intake([Firing("database-down", "db-7", ref)], [], app.clock(), "gone", 0.0)
    incident = await eventually(lambda: _escalated(app), timeout=30)
    steps = await app.store.steps(incident.id)
    assert [s.name for s in steps] == ["container.logs", "container.restart"]
    assert all(s.status == "failed" and "not admitted" in s.detail for s in steps)
    assert all("SECRET" not in s.detail for s in steps)
    assert docker_daemon.started_at("db-7") == before


SECRET_COMMAND = ["/bin/busybox", "sh", "-c", "echo SECRET-LINE; exec /bin/busybox sleep 100000"]


async def _escalated(app: Any) -> Any:
    found = await app.store.list_incidents("escalated")
    return found[0] if found else None
