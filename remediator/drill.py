"""``remediator drill``: rehearse a policy against the real system, as the drill sections of runbooks ask.

It injects the failure the policy covers (stops the container, holds a transaction idle, or posts a synthetic
alert to Alertmanager), then follows the running daemon's incident through its API and times detection,
action and recovery against the policy's ``drill`` criteria. The target must pass the policy's allow list:
a drill never touches what the policy could not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from remediator.actions.docker import DockerBackend, exact_container
from remediator.actions.postgres import PostgresBackend
from remediator.api_client import ApiClient, request_json
from remediator.domain.policies import Policy
from remediator.errors import ActionError, RemediatorError
from remediator.policy.matching import target_of
from remediator.settings import Settings


@dataclass
class DrillReport:
    policy: str
    target: str
    injected: str
    detect_within_s: float
    recover_within_s: float
    incident_id: int | None = None
    detected_s: float | None = None
    acted_s: float | None = None
    recovered_s: float | None = None
    outcome: str = ""
    intact: bool = False
    """Nothing lost: the alert opened the incident, every step finished, the timeline ends resolved."""
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            self.detected_s is not None
            and self.detected_s <= self.detect_within_s
            and self.recovered_s is not None
            and self.recovered_s <= self.recover_within_s
            and self.intact
        )

    def render(self) -> str:
        def cell(value: float | None, limit: float | None = None) -> str:
            if value is None:
                return "never"
            verdict = "" if limit is None else ("  ok" if value <= limit else f"  LATE (limit {limit:g}s)")
            return f"{value:6.1f}s{verdict}"

        lines = [
            f"drill {self.policy} on {self.target}: injected {self.injected}",
            f"  detected   {cell(self.detected_s, self.detect_within_s)}",
            f"  acted      {cell(self.acted_s)}",
            f"  recovered  {cell(self.recovered_s, self.recover_within_s)}",
            f"  incident   {self.incident_id if self.incident_id is not None else '-'} {self.outcome}",
            f"  lost       {'nothing' if self.intact else 'see notes'}",
            *(f"  note: {n}" for n in self.notes),
            f"  result     {'PASS' if self.passed else 'FAIL'}",
        ]
        return "\n".join(lines)


def synthetic_alert(policy: Policy, target: str, ends: bool = False) -> dict[str, Any]:
    """An alert the policy matches: its equality matchers, the target label, and ``drill="true"``."""
    labels = {m.label: m.value for m in policy.match if m.op == "="}
    labels[policy.target.from_label] = target
    labels["drill"] = "true"
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": {"summary": f"remediator drill of {policy.name}"},
    }
    if ends:
        alert["endsAt"] = datetime.now(UTC).isoformat()
    return alert


async def run_drill(
    settings: Settings,
    policy: Policy,
    target: str,
    api: ApiClient,
    alertmanager_url: str | None = None,
    timeout_s: float | None = None,
    poll_s: float = 0.25,
) -> DrillReport:
    target_of(policy, {policy.target.from_label: target})  # TargetRefused outside the allow list
    criteria = policy.drill
    injected = criteria.injection(policy.target.kind)
    report = DrillReport(policy.name, target, injected, criteria.detect_within_s, criteria.recover_within_s)
    if injected == "alert" and not alertmanager_url:
        raise RemediatorError("this drill posts a synthetic alert: give --alertmanager URL")
    started = time.time()
    holder: asyncio.Task[None] | None = None
    release = asyncio.Event()
    if injected == "stop_container":
        docker = DockerBackend(settings.docker.host, settings.docker.timeout_s, 1)
        try:
            await docker.call(target, lambda client: exact_container(client, target).stop(timeout=10))
        finally:
            docker.close()
    elif injected == "alert":
        assert alertmanager_url is not None
        await _post_alert(alertmanager_url, synthetic_alert(policy, target))
    else:
        holder = await _hold_idle_transaction(settings, target, release)
    try:
        await _follow(report, api, started, timeout_s or criteria.recover_within_s + 30, poll_s)
    finally:
        if injected == "alert" and alertmanager_url:
            await _post_alert(alertmanager_url, synthetic_alert(policy, target, ends=True))
        if holder is not None:
            release.set()
            with contextlib.suppress(ActionError):  # remediation may well have terminated it: the point
                await holder
    return report


async def _post_alert(alertmanager_url: str, alert: dict[str, Any]) -> None:
    url = f"{alertmanager_url.rstrip('/')}/api/v2/alerts"
    await asyncio.to_thread(request_json, "POST", url, [alert])


async def _hold_idle_transaction(
    settings: Settings, target: str, release: asyncio.Event
) -> asyncio.Task[None]:
    """A session that opens a transaction and then sits idle in it, until the drill ends."""
    backend = PostgresBackend(settings.postgres)
    began = asyncio.Event()

    async def hold(connection: Any) -> None:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("SELECT 1")
        began.set()
        await release.wait()  # the connection closes after this, which rolls the transaction back

    task = asyncio.create_task(backend.call(target, hold, application_name="remediator-drill"))
    waiter = asyncio.create_task(began.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # the connection failed: raise its ActionError now
    return task


def _accounted(incident: dict[str, Any], report: DrillReport) -> bool:
    kinds = [entry["kind"] for entry in incident["timeline"]]
    unfinished = [s for s in incident["steps"] if s["status"] in ("started", "interrupted")]
    for step in unfinished:
        report.notes.append(f"step {step['name']} #{step['attempt']} never finished")
    if "opened" not in kinds or "resolved" not in kinds:
        report.notes.append("the timeline lacks the opening alert or the resolution")
    return not unfinished and "opened" in kinds and "resolved" in kinds


async def _follow(
    report: DrillReport, api: ApiClient, started: float, timeout_s: float, poll_s: float
) -> None:
    """Watch the daemon's incidents until the drilled one resolves, escalates, or time runs out."""
    deadline = started + timeout_s
    while time.time() < deadline:
        if report.incident_id is None:
            for incident in (await asyncio.to_thread(api.get, "/api/incidents?limit=100"))["incidents"]:
                mine = incident["policy"] == report.policy and incident["target"] == report.target
                if mine and incident["opened_at"] >= started - 1:
                    report.incident_id = incident["id"]
                    report.detected_s = max(0.0, incident["opened_at"] - started)
        if report.incident_id is not None:
            incident = await asyncio.to_thread(api.get, f"/api/incidents/{report.incident_id}")
            acts = [s for s in incident["steps"] if s["kind"] == "act" and s["finished_at"] is not None]
            if acts and report.acted_s is None:
                report.acted_s = acts[0]["finished_at"] - started
            if incident["status"] == "resolved":
                report.recovered_s = incident["updated_at"] - started
                report.outcome = "resolved"
                report.intact = _accounted(incident, report)
                return
            if incident["status"] == "escalated":
                report.outcome = f"escalated: {incident['reason']}"
                report.notes.append("the policy ran out and a human was paged: the drill did not recover")
                return
        await asyncio.sleep(poll_s)
    report.outcome = "timed out"
    report.notes.append(f"gave up after {timeout_s:g}s")
