"""remediator backtest on a real Prometheus: a week of ALERTS history backfilled with promtool (DatabaseDown
recovering, failing and flapping; HighErrorRate in a storm, flapping, and once while the healthy floor's metric
says too few replicas are up), replayed by the command line; every count is checked against the numbers worked
out by hand below from the policies, the guards and the documented Alertmanager timing (group_wait 0 s, resolved
30 s after the first evaluation without the alert)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers import REPO
from realparts import PrometheusFactory

MIN = 60
HOUR = 3600
DAY = 86_400

DATABASE_DOWN = """
name: database-down
match: [alertname = DatabaseDown]
target: {kind: container, from_label: container, allow: ["sms-db"]}
limits: {cooldown_s: 1800, flapping: {count: 3, window_s: 3600}}
steps:
  - diagnose: container.logs
  - act: container.restart
    verify: {resolved_within_s: 300}
  - escalate: oncall
"""

HIGH_ERROR_RATE = """
name: high-error-rate
match: [alertname = HighErrorRate]
target: {kind: container, from_label: container, allow: ["api-[1-5]"]}
limits: {cooldown_s: 600, flapping: {count: 3, window_s: 3600}}
healthy_floor:
  prometheus: {query: 'api_healthy_replicas >= 3'}
steps:
  - act: container.restart
    verify: {resolved_within_s: 300}
  - escalate: oncall
"""


def _alerts(
    name: str, severity: str, container: str, start: float, minutes: int, state: str = "firing"
) -> list[str]:
    labels = f'alertname="{name}",alertstate="{state}",container="{container}",severity="{severity}"'
    return [f"ALERTS{{{labels}}} 1 {start + i * MIN:.0f}" for i in range(minutes)]


def history(t0: float) -> str:
    """A week of ALERTS from ``t0`` (one sample a minute while an alert fires, as a 1 m evaluation interval
    writes them), and the floor's metric."""
    series: dict[str, list[str]] = {}

    def add(key: str, lines: list[str]) -> None:
        series.setdefault(key, []).extend(lines)

    db = "db"
    # Pending before firing: a series of its own (alertstate="pending") that the backtest ignores.
    add("db-pending", _alerts("DatabaseDown", "critical", "sms-db", t0 + 2 * HOUR - 2 * MIN, 2, "pending"))
    add(db, _alerts("DatabaseDown", "critical", "sms-db", t0 + 2 * HOUR, 3))  # day 0: resolves in 3 min
    add(db, _alerts("DatabaseDown", "critical", "sms-db", t0 + DAY + 3 * HOUR, 30))  # day 1: 30 min
    for minute in (0, 20, 40):  # day 2: back three times in an hour
        add(db, _alerts("DatabaseDown", "critical", "sms-db", t0 + 2 * DAY + 10 * HOUR + minute * MIN, 3))
    storm = t0 + 4 * DAY + 14 * HOUR  # day 4: six containers at once for 10 min
    for n in range(1, 7):
        add(f"api-{n}", _alerts("HighErrorRate", "warning", f"api-{n}", storm, 10))
    for minute in (0, 15, 30, 45):  # day 5: api-1 flaps
        add("api-1", _alerts("HighErrorRate", "warning", "api-1", t0 + 5 * DAY + 8 * HOUR + minute * MIN, 3))
    add("api-2", _alerts("HighErrorRate", "warning", "api-2", t0 + 6 * DAY + 12 * HOUR, 3))  # floor broken
    add("disk", _alerts("DiskFull", "warning", "sms-db", t0 + 3 * DAY, 5))  # no policy takes it
    # The floor's metric: 5 healthy replicas, except 1 from day 6 11:50 to 12:30.
    broken = (t0 + 6 * DAY + 11 * HOUR + 50 * MIN, t0 + 6 * DAY + 12 * HOUR + 30 * MIN)
    add(
        "floor",
        [
            f"api_healthy_replicas {1 if broken[0] <= t < broken[1] else 5} {t:.0f}"
            for t in range(int(t0), int(t0 + 7 * DAY), MIN)
        ],
    )
    lines = ["# TYPE ALERTS gauge", *series.pop("db-pending")]
    for key in ("db", "api-1", "api-2", "api-3", "api-4", "api-5", "api-6", "disk"):
        lines += sorted(series[key], key=lambda line: float(line.rsplit(" ", 1)[1]))
    lines += ["# TYPE api_healthy_replicas gauge", *series["floor"], "# EOF"]
    return "\n".join(lines) + "\n"


def test_a_week_of_alerts_history_in_a_real_prometheus(
    prometheus_factory: PrometheusFactory, tmp_path: Path
) -> None:
    t0 = (time.time() // HOUR) * HOUR - 7 * DAY - HOUR
    prom = prometheus_factory(
        "global: {evaluation_interval: 1m}\n",
        backfill=history(t0),
        extra_args=["--storage.tsdb.retention.time=30d"],
    )
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "database-down.yaml").write_text(DATABASE_DOWN)
    (policies / "high-error-rate.yaml").write_text(HIGH_ERROR_RATE)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")},
        "REMEDIATOR_STATE_DIR": str(tmp_path / "state"),
        "REMEDIATOR_POLICIES_DIR": str(policies),
        "REMEDIATOR_GUARDS__BUDGET_COUNT": "4",
        "REMEDIATOR_ESCALATION__TARGETS": '{"oncall": {"url": "http://127.0.0.1:9/never-called"}}',
        "REMEDIATOR_ESCALATION__PAGERDUTY": '{"pager": {"routing_key": "never-used"}}',
        "REMEDIATOR_ESCALATION__ROUTING": '{"routes": {"P1": ["pager"]}}',
    }
    argv = [sys.executable, "-m", "remediator", "backtest", "--prometheus", prom.url]
    argv += ["--start", f"{t0:.0f}", "--end", f"{t0 + 7 * DAY:.0f}", "-o", "json"]
    started = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["problems"] == []
    assert report["unfinished_ladders"] == 0
    # 5 DatabaseDown + 6 + 4 + 1 HighErrorRate + 1 DiskFull episodes, each a firing and a resolved; the
    # pending samples are no episode.
    assert report["alerts"] == {"firing": 17, "resolved": 17}
    assert report["unmatched_alerts"] == 1

    db = report["policies"]["database-down"]
    # Day 0: restarted at 02:00, the resolved comes at 02:03:30 (last sample 02:02, next evaluation 02:03,
    # + group_interval 30 s): within 300 s, verified. Day 1: restarted at 03:00, still firing at 03:05: not
    # recovered, escalated (P1: oncall and the pager). Day 2: 10:00 restarted and verified; 10:20 refused by
    # the cooldown (1800 s since 10:00's restart); 10:40 refused as flapping (3 incidents in the hour).
    acted = [t0 + 2 * HOUR, t0 + DAY + 3 * HOUR, t0 + 2 * DAY + 10 * HOUR]
    assert [(a["ts"], a["step"], a["target"], a["host"]) for a in db["actions"]] == [
        (t, "container.restart", "sms-db", "default") for t in acted
    ]
    assert db["incidents"] == 5
    assert db["diagnoses"] == 5
    assert db["refusals"] == {"cooldown": 1, "flapping": 1}
    assert (db["verified"], db["not_recovered"]) == (2, 1)
    assert db["escalations"] == {"P1": 3}
    assert db["pages"] == {"P1": 3}
    assert db["busiest_hour"]["incidents"] == 3
    assert db["busiest_hour"]["actions"] == 1
    assert db["busiest_hour"]["hour"] == _hour(t0 + 2 * DAY + 10 * HOUR)
    assert db["healthy_floor"] == "none"

    api = report["policies"]["high-error-rate"]
    storm = t0 + 4 * DAY + 14 * HOUR
    flaps = t0 + 5 * DAY + 8 * HOUR
    # The storm: api-6 is outside the allow list (escalated at intake); of api-1..5 the global budget (4 an
    # hour) admits four, the fifth is refused; the four are still firing 300 s later: not recovered. Day 5:
    # 08:00 and 08:15 restarted and verified (900 s apart, past the 600 s cooldown), 08:30 and 08:45 refused as
    # flapping. Day 6: the floor's metric says 1 replica: refused by the healthy floor. P3: nothing pages.
    assert sorted(a["ts"] for a in api["actions"]) == [storm] * 4 + [flaps, flaps + 15 * MIN]
    assert {a["target"] for a in api["actions"] if a["ts"] == storm} < {f"api-{n}" for n in range(1, 6)}
    assert api["incidents"] == 11
    assert api["refusals"] == {"allow_list": 1, "budget": 1, "flapping": 2, "healthy_floor": 1}
    assert (api["verified"], api["not_recovered"]) == (2, 4)
    assert api["escalations"] == {"P3": 9}
    assert api["pages"] == {}
    assert api["busiest_hour"] == {"hour": _hour(storm), "incidents": 6, "actions": 4}
    # Evaluated before each of the 10 acts that got that far: 5 in the storm, 4 on day 5, 1 on day 6.
    assert api["healthy_floor"] == "evaluated at the replayed time (10 check(s))"


def _hour(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:00Z", time.gmtime(ts - ts % HOUR))
