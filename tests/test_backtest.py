"""remediator backtest: its sources (a file of webhook bodies, the store's inbox read only, ALERTS turned into
Alertmanager's notifications), shadow mode and --enforce, approvals and a healthy floor that cannot be evaluated
without Prometheus, and the command line's output and mistakes. Counts are worked out by hand in each test.
The real-Prometheus proof is tests/test_backtest_prometheus.py; the comparison with a daemon is
tests/test_backtest_parity.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from engine_rig import RecordingAction
from helpers import REPO, TOKEN, alert, notification, post_alerts
from realparts import AlertmanagerFactory
from test_store import make

from remediator import backtest
from remediator.actions.catalogue import SPECS
from remediator.actions.docker import LogsParams, RestartParams
from remediator.domain.alerts import Notification
from remediator.policy.loader import load_dir
from remediator.settings import Settings
from remediator.store.base import Note

T = 1_795_428_000.0  # 2026-11-23T10:00:00Z


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")}
    return subprocess.run(
        [sys.executable, "-m", "remediator", "backtest", *args],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ---------------------------------------------------------------------------------------------------------
# A file of webhook bodies: shadow mode and --enforce, an approval's timeout, a floor with no Prometheus

SHADOWED = """
name: shadowed
mode: shadow
match: [alertname = WebDown]
target: {kind: container, from_label: container, allow: ["web"]}
steps:
  - act: container.restart
    verify: {resolved_within_s: 60}
  - escalate: oncall
"""

GUARDED = """
name: guarded
match: [alertname = QueueStuck]
target: {kind: container, from_label: container, allow: ["worker"]}
healthy_floor:
  prometheus: {query: 'sum(up{job="workers"}) >= 2'}
steps:
  - act: container.restart
    approval: {timeout_s: 600, on_timeout: proceed}
    verify: {resolved_within_s: 60}
  - escalate: oncall
"""

LIMITED = """
name: limited
match: [alertname = CacheDown]
target: {kind: container, from_label: container, allow: ["cache"]}
limits: {cooldown_s: 0, max_actions: {count: 1, window_s: 3600}, flapping: {count: 10, window_s: 3600}}
steps:
  - act: container.restart
    verify: {resolved_within_s: 60}
  - escalate: oncall
"""


def _body(name: str, container: str, status: str, starts: float, ends: float | None = None) -> dict[str, Any]:
    one = alert(name, status=status, fingerprint=f"fp-{name}", starts_at=_iso(starts), container=container)
    if ends is not None:
        one["endsAt"] = _iso(ends)
    return notification(one)


def _history_file(tmp_path: Path) -> Path:
    lines = [
        # Bare bodies: received at the latest startsAt of a firing, endsAt of a resolved.
        json.dumps(_body("WebDown", "web", "firing", T)),
        json.dumps(_body("WebDown", "web", "resolved", T, T + 30)),
        "",
        "# the queue: received times given with each body",
        json.dumps({"at": _iso(T + 3600), "body": _body("QueueStuck", "worker", "firing", T + 3600)}),
        json.dumps({"at": T + 4230, "body": _body("QueueStuck", "worker", "resolved", T + 3600, T + 4230)}),
        json.dumps(_body("Unknown", "x", "firing", T + 5000)),
        # The cache, twice 10 minutes apart: one action an hour on it.
        json.dumps(_body("CacheDown", "cache", "firing", T + 7200)),
        json.dumps(_body("CacheDown", "cache", "resolved", T + 7200, T + 7210)),
        json.dumps(_body("CacheDown", "cache", "firing", T + 7800)),
        json.dumps(_body("CacheDown", "cache", "resolved", T + 7800, T + 7810)),
    ]
    path = tmp_path / "history.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _policies(tmp_path: Path, **files: str) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / f"{name}.yaml").write_text(text)
    return directory


def test_a_file_of_webhook_bodies(tmp_path: Path) -> None:
    env = {
        "REMEDIATOR_STATE_DIR": str(tmp_path / "state"),
        "REMEDIATOR_POLICIES_DIR": str(
            _policies(tmp_path, shadowed=SHADOWED, guarded=GUARDED, limited=LIMITED)
        ),
    }
    history = _history_file(tmp_path)
    done = _cli("--file", str(history), "-o", "json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["notifications"] == 9
    assert (report["source"], report["range"]) == (f"file {history}", None)  # the whole file
    assert report["alerts"] == {"firing": 5, "resolved": 4}
    assert report["unmatched_alerts"] == 1
    assert report["problems"] == []

    # Shadow mode, as the policy says: the restart and the escalation are both "would have", nothing acts.
    shadowed = report["policies"]["shadowed"]
    assert (shadowed["mode"], shadowed["incidents"], shadowed["actions"]) == ("shadow", 1, [])
    assert shadowed["refusals"] == {"shadow": 2}
    assert shadowed["escalations"] == {}

    # Nobody answers the approval: after its 600 s the timeout proceeds; the floor cannot be evaluated without
    # a Prometheus and is taken to hold (and said so); the resolved at 4230 s is 30 s after the restart.
    guarded = report["policies"]["guarded"]
    assert guarded["approvals_requested"] == 1
    assert [(a["ts"], a["target"]) for a in guarded["actions"]] == [(T + 3600 + 600, "worker")]
    assert (guarded["verified"], guarded["not_recovered"], guarded["refusals"]) == (1, 0, {})
    assert guarded["healthy_floor"].startswith("not evaluable (no Prometheus at replay time)")
    assert "1 check(s)" in guarded["healthy_floor"]
    assert guarded["busiest_hour"] == {"hour": "2026-11-23T11:00Z", "incidents": 1, "actions": 1}

    # The cache: restarted at 2 h (verified 10 s later); 10 minutes later the rate limit (1 an hour) refuses.
    limited = report["policies"]["limited"]
    assert [(a["ts"], a["target"]) for a in limited["actions"]] == [(T + 7200, "cache")]
    assert limited["refusals"] == {"rate_limit": 1}
    assert (limited["incidents"], limited["verified"], limited["escalations"]) == (2, 1, {"P1": 1})

    # --enforce: the shadowed policy as it would act once promoted.
    enforced = json.loads(_cli("--file", str(history), "--enforce", "-o", "json", env=env).stdout)
    shadowed = enforced["policies"]["shadowed"]
    assert [(a["ts"], a["step"], a["target"]) for a in shadowed["actions"]] == [
        (T, "container.restart", "web")
    ]
    assert (shadowed["verified"], shadowed["refusals"]) == (1, {})

    table = _cli("--file", str(history), env=env)
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert "nothing was executed, nobody was paged" in out
    assert out.splitlines()[3].split() == [
        "POLICY", "MODE", "INCIDENTS", "ACTIONS", "RECOVERED/NOT", "REFUSED", "ESCALATED", "PAGES", "BUSIEST", "HOUR"
    ]  # fmt: skip
    assert "2026-11-23T11:10:00Z  guarded  container.restart  worker  default" in out
    assert "guarded: not evaluable (no Prometheus at replay time)" in out
    assert "alerts no policy takes: 1" in out


def test_mistakes_on_the_command_line(tmp_path: Path) -> None:
    env = {
        "REMEDIATOR_STATE_DIR": str(tmp_path / "state"),
        "REMEDIATOR_POLICIES_DIR": str(_policies(tmp_path, shadowed=SHADOWED)),
    }
    done = _cli(env=env)
    assert done.returncode == 1
    assert "no history: give --file JSONL, --inbox or --prometheus URL" in done.stderr
    # --inbox where there is no store: said, and none is created by the read.
    done = _cli("--inbox", env=env)
    assert done.returncode == 1
    assert "no store at" in done.stderr
    assert not (tmp_path / "state").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_body("WebDown", "web", "firing", T)) + "\n{not json\n")
    done = _cli("--file", str(bad), env=env)
    assert done.returncode == 1
    assert f"{bad}:2: not an Alertmanager webhook v4 body" in done.stderr
    done = _cli("--inbox", "--since", "7x", env=env)
    assert done.returncode == 1
    assert "not a duration" in done.stderr
    done = _cli("--prometheus", "http://127.0.0.1:9", "--since", "1d", env=env)  # nothing listens there
    assert done.returncode == 1
    assert "error: prometheus at http://127.0.0.1:9: " in done.stderr
    done = _cli("--file", str(bad), "--start", "2026-11-02", "--end", "2026-11-01", env=env)
    assert done.returncode == 1
    assert "is not before its end" in done.stderr


# ---------------------------------------------------------------------------------------------------------
# The store's inbox: what this daemon received, tried against a changed policy


async def test_inbox_received_reads_a_time_range_and_changes_nothing(store_url: str) -> None:
    store = make(store_url)
    await store.open()
    try:
        ids = [await store.inbox_put(f'{{"n": {n}}}', 100.0 * n) for n in (1, 2, 3)]
        await store.record_intake([Note("unmatched", {})], ids[:2], 250.0, "a", 0.0)  # two processed
        before = await store.table_rows()
        assert await store.inbox_received(150.0, 300.0) == [(200.0, '{"n": 2}'), (300.0, '{"n": 3}')]
        assert await store.inbox_received(0.0, 1000.0, limit=1) == [(100.0, '{"n": 1}')]
        assert await store.inbox_received(301.0, 1000.0) == []
        assert await store.table_rows() == before
    finally:
        await store.close()


ONLY_DB1 = """
name: database-down
match: [alertname = DatabaseDown]
target: {kind: container, from_label: container, allow: ["db-1"]}
steps:
  - act: container.restart
    verify: {resolved_within_s: 60}
  - escalate: oncall
"""


async def test_a_policy_change_tried_on_what_the_daemon_received(
    start_app: Callable[..., Any], tmp_path: Path
) -> None:
    app = await start_app(policies={"database-down.yaml": ONLY_DB1}, REMEDIATOR_PROMETHEUS__URL="")
    restart = RecordingAction("container.restart", "act", RestartParams, backend="docker")
    app.actions.update(
        {restart.name: restart, "container.logs": RecordingAction("container.logs", "diagnose", LogsParams)}
    )
    bodies = [
        notification(alert(fingerprint="f1", container="db-1")),
        notification(alert(fingerprint="f2", container="db-2")),
    ]
    assert await post_alerts(app.port, bodies, token=TOKEN) == [200, 200]
    for _ in range(100):
        if restart.calls:
            break
        await asyncio.sleep(0.05)
    assert restart.calls == ["db-1"]  # db-2 is outside this allow list
    await app.stop()
    store_file = Path(app.settings.store_path)
    size = store_file.stat().st_size

    env = {
        "REMEDIATOR_STATE_DIR": str(tmp_path / "state"),
        "REMEDIATOR_POLICIES_DIR": str(tmp_path / "policies"),
    }
    done = await asyncio.to_thread(_cli, "--inbox", "--since", "1h", "-o", "json", env=env)
    assert done.returncode == 0, done.stderr
    as_received = json.loads(done.stdout)["policies"]["database-down"]
    assert [a["target"] for a in as_received["actions"]] == ["db-1"]
    assert as_received["refusals"] == {"allow_list": 1}

    # The change: db-2 admitted too. The same two alerts would now restart both.
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "database-down.yaml").write_text(ONLY_DB1.replace('["db-1"]', '["db-1", "db-2"]'))
    done = await asyncio.to_thread(
        _cli, "--inbox", "--since", "1h", "--policies", str(changed), "-o", "json", env=env
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["source"] == "the store's inbox"
    tried = report["policies"]["database-down"]
    assert sorted(a["target"] for a in tried["actions"]) == ["db-1", "db-2"]
    assert tried["refusals"] == {}
    # Read only: the daemon's store has neither grown nor gained an incident.
    assert store_file.stat().st_size == size
    store = make(f"sqlite:{store_file}")
    await store.open()
    try:
        assert len(await store.list_incidents()) == 2
    finally:
        await store.close()


# ---------------------------------------------------------------------------------------------------------
# ALERTS series to Alertmanager's notifications


def test_alerts_series_become_firing_and_resolved_notifications() -> None:
    labels = (("alertname", "DatabaseDown"), ("container", "sms-db"), ("severity", "critical"))
    minute = 60.0
    # One missed evaluation (a 120 s gap) is one episode; a 300 s gap ends it; the last is still firing at the end.
    times = [T, T + 60, T + 180, T + 240, T + 540, T + 600, T + 660]
    timing = backtest.AlertmanagerTiming(group_wait_s=10.0, group_interval_s=30.0)
    got = backtest.deliveries_from_alerts({labels: times}, end=T + 700, timing=timing)
    assert backtest.interval_of([times]) == minute
    summary = [
        (
            d.at - T,
            d.notification.status,
            a.starts_at.timestamp() - T,
            a.ends_at and a.ends_at.timestamp() - T,
        )
        for d in got
        for a in d.notification.alerts
    ]
    assert summary == [
        (10.0, "firing", 0.0, None),
        (240.0 + 60 + 30, "resolved", 0.0, 300.0),  # resolved at the first evaluation without it (300 s)
        (540.0 + 10, "firing", 540.0, None),  # still firing at the end: no resolved is made up
    ]
    first = got[0].notification.alerts[0]
    assert first.labels == dict(labels)
    assert first.annotations == {}
    assert {a.fingerprint for d in got for a in d.notification.alerts} == {backtest.fingerprint(dict(labels))}


def test_the_fingerprint_is_alertmanagers(alertmanager_factory: AlertmanagerFactory) -> None:
    am = alertmanager_factory("http://127.0.0.1:9/never-called", TOKEN)
    sets = [
        {"alertname": "DatabaseDown", "container": "sms-db", "severity": "critical"},
        {"alertname": "HighErrorRate", "container": "api-1", "instance": "10.0.0.1:9100", "job": "api"},
        {"alertname": "Ünïcode", "container": "x y=z", "severity": "warning"},
    ]
    for labels in sets:
        am.fire(labels)
    with urllib.request.urlopen(f"{am.url}/api/v2/alerts", timeout=10) as response:
        found = {json.dumps(a["labels"], sort_keys=True): a["fingerprint"] for a in json.load(response)}
    assert len(found) == 3
    for labels in sets:
        assert found[json.dumps(labels, sort_keys=True)] == backtest.fingerprint(labels)


# ---------------------------------------------------------------------------------------------------------
# A fleet: the host each action would have gone to

FLEET = """
name: database-down
match: [alertname = DatabaseDown]
target:
  kind: container
  from_label: container
  allow: ["sms-db"]
  host: {from_label: instance, pattern: '^(?P<host>[^:]+):[0-9]+$', allow: ["web-[0-9]+"]}
limits: {cooldown_s: 600}
steps:
  - act: container.restart
    verify: {resolved_within_s: 60}
  - escalate: oncall
"""


def test_each_action_names_its_host_and_the_guards_count_per_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = {name: {"url": f"unix:///nonexistent/{name}.sock"} for name in ("web-1", "web-2")}
    monkeypatch.setenv("REMEDIATOR_DOCKER__HOSTS", json.dumps(hosts))
    monkeypatch.setenv("REMEDIATOR_STATE_DIR", str(tmp_path / "state"))
    settings = Settings()
    (policy,) = load_dir(_policies(tmp_path, fleet=FLEET), SPECS)

    def on(instance: str, status: str, starts: float, at: float) -> backtest.Delivery:
        one = alert(status=status, fingerprint=f"fp-{instance}", starts_at=_iso(starts), instance=instance)
        one["labels"]["container"] = "sms-db"
        if status == "resolved":
            one["endsAt"] = _iso(at)
        return backtest.Delivery(at, Notification.model_validate(notification(one)))

    history = [
        on("web-1:9100", "firing", T, T),  # restarted on web-1
        on("web-2:9100", "firing", T, T),  # the same name on web-2: another incident, restarted there
        on("web-3:9100", "firing", T, T),  # web-3 is not configured: refused, never connected to
        on("web-1:9100", "resolved", T, T + 20),
        on("web-2:9100", "resolved", T, T + 20),
        on("web-1:9100", "firing", T + 120, T + 120),  # web-1 again within its cooldown: refused
        on("web-1:9100", "resolved", T + 120, T + 150),
    ]
    report = backtest.run(history, [policy], settings)
    row = report["policies"]["database-down"]
    assert [(a["ts"], a["target"], a["host"]) for a in row["actions"]] == [
        (T, "sms-db", "web-1"),
        (T, "sms-db", "web-2"),
    ]
    assert row["incidents"] == 4
    assert row["refusals"] == {"allow_list": 1, "cooldown": 1}
    assert (row["verified"], row["escalations"]) == (2, {"P1": 2})
