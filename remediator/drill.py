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

from remediator.actions.docker import exact_container
from remediator.actions.fleet import DockerFleet
from remediator.actions.postgres import PostgresBackend
from remediator.api_client import ApiClient, request_json
from remediator.domain.policies import DOCKER_KINDS, HostFromLabel, Policy
from remediator.errors import ActionError, RemediatorError, TargetRefused
from remediator.policy.matching import host_of, target_of
from remediator.settings import DEFAULT_DOCKER_HOST, Settings


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
    host: str = DEFAULT_DOCKER_HOST
    """The Docker host drilled (``default`` for one host, and for a PostgreSQL target)."""
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
            f"drill {self.policy} on {self.target}"
            + (f" on host {self.host}" if self.host != DEFAULT_DOCKER_HOST else "")
            + f": injected {self.injected}",
            f"  detected   {cell(self.detected_s, self.detect_within_s)}",
            f"  acted      {cell(self.acted_s)}",
            f"  recovered  {cell(self.recovered_s, self.recover_within_s)}",
            f"  incident   {self.incident_id if self.incident_id is not None else '-'} {self.outcome}",
            f"  lost       {'nothing' if self.intact else 'see notes'}",
            *(f"  note: {n}" for n in self.notes),
            f"  result     {'PASS' if self.passed else 'FAIL'}",
        ]
        return "\n".join(lines)


def synthetic_alert(
    policy: Policy, target: str, ends: bool = False, host_label: str | None = None
) -> dict[str, Any]:
    """An alert the policy matches: its equality matchers, the target label (and the host label, for a policy
    that reads its host from one), and ``drill="true"``."""
    labels = {m.label: m.value for m in policy.match if m.op == "="}
    labels[policy.target.from_label] = target
    if isinstance(policy.target.host, HostFromLabel) and host_label is not None:
        labels[policy.target.host.from_label] = host_label
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
    host: str | None = None,
    host_label: str | None = None,
) -> DrillReport:
    """Break ``target`` (on the Docker host ``host``: the policy's own when it fixes one, else ``default``) and
    follow the daemon's incident. ``host_label``: the value of the policy's host label in a synthetic alert
    (default: the host's name), which the policy's pattern must map to ``host``."""
    target_of(policy, {policy.target.from_label: target})  # TargetRefused outside the allow list
    fleet = DockerFleet.from_settings(settings.docker)
    host = _drilled_host(policy, host, host_label, fleet.names)
    host_label = host_label or host
    criteria = policy.drill
    injected = criteria.injection(policy.target.kind)
    report = DrillReport(policy.name, target, injected, criteria.detect_within_s, criteria.recover_within_s)
    report.host = host
    if injected == "alert" and not alertmanager_url:
        raise RemediatorError("this drill posts a synthetic alert: give --alertmanager URL")
    started = time.time()
    holder: asyncio.Task[None] | None = None
    release = asyncio.Event()
    if injected == "stop_container":
        try:
            await fleet.on(host).call(target, lambda client: exact_container(client, target).stop(timeout=10))
        finally:
            fleet.close()
    elif injected == "alert":
        fleet.close()
        assert alertmanager_url is not None
        await _post_alert(alertmanager_url, synthetic_alert(policy, target, host_label=host_label))
    else:
        holder = await _hold_idle_transaction(settings, target, release)
    try:
        await _follow(report, api, started, timeout_s or criteria.recover_within_s + 30, poll_s)
    finally:
        if injected == "alert" and alertmanager_url:
            await _post_alert(
                alertmanager_url, synthetic_alert(policy, target, ends=True, host_label=host_label)
            )
        if holder is not None:
            release.set()
            with contextlib.suppress(ActionError):  # remediation may well have terminated it: the point
                await holder
    return report


def _drilled_host(
    policy: Policy, host: str | None, host_label: str | None, configured: frozenset[str]
) -> str:
    """The host a drill breaks, checked as intake would check an alert naming it (RemediatorError otherwise)."""
    spec = policy.target.host
    if spec is None or isinstance(spec, str) or policy.target.kind not in DOCKER_KINDS:
        fixed = spec if isinstance(spec, str) else DEFAULT_DOCKER_HOST
        if host not in (None, fixed):
            raise RemediatorError(f"policy {policy.name} acts on host {fixed} only, not {host}")
        host = fixed
    elif host is None:
        raise RemediatorError(
            f"policy {policy.name} reads its host from label {spec.from_label}: give --host NAME"
        )
    labels = {spec.from_label: host_label or host} if isinstance(spec, HostFromLabel) else {}
    try:
        resolved = host_of(policy, labels, configured)
    except TargetRefused as exc:
        raise RemediatorError(f"the drill's alert would be refused: {exc}") from exc
    if resolved != host:
        raise RemediatorError(
            f"the host label {host_label or host!r} names host {resolved}, not {host}: give --host-label"
        )
    return host


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
                mine = (
                    incident["policy"] == report.policy
                    and incident["target"] == report.target
                    and incident.get("host", DEFAULT_DOCKER_HOST) == report.host
                )
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
