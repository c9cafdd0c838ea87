"""The fleet's rules without Docker: how a policy names its host, what intake admits, what settings accept and
what they show. (tests/test_fleet.py proves the same on three real dockerds.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remediator.actions.catalogue import SPECS
from remediator.engine.breakers import host_of as breaker_host
from remediator.errors import PolicyError
from remediator.policy.loader import load_file
from remediator.policy.matching import match_alert
from remediator.settings import Settings, shown_url

POLICY = """\
name: app-down
match: [alertname = AppDown]
target:
  kind: container
  from_label: container
  allow: ["app-[0-9]+"]
  host:
    from_label: instance
    pattern: '^(?P<host>[^:]+):[0-9]+$'
    allow: ["web-[0-9]+", db-1]
steps:
  - act: container.restart
    verify: {resolved_within_s: 60}
"""

CONFIGURED = frozenset({"web-1", "web-2", "db-1", "spare"})


def load(tmp_path: Path, text: str) -> list:  # type: ignore[type-arg]
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return load_file(path, SPECS)


def labels(instance: str | None, container: str = "app-1") -> dict[str, str]:
    found = {"alertname": "AppDown", "container": container}
    if instance is not None:
        found["instance"] = instance
    return found


def test_the_host_comes_from_the_label_through_the_pattern(tmp_path: Path) -> None:
    policies = load(tmp_path, POLICY)
    for instance, host in (("web-1:9100", "web-1"), ("web-2:8080", "web-2"), ("db-1:9187", "db-1")):
        match = match_alert(policies, labels(instance), CONFIGURED)
        assert match is not None and not match.refused and (match.host, match.target) == (host, "app-1")


@pytest.mark.parametrize(
    ("instance", "reason"),
    [
        (None, "host label 'instance' is missing"),
        ("web-1", "does not match the host pattern"),
        ("tcp://evil:2375", "does not match the host pattern"),
        ("../../:9100", "outside the host allow list"),
        ("web-1;x:9100", "outside the host allow list"),
        ("web-9:9100", "docker host 'web-9' is not configured"),
        ("spare:9100", "outside the host allow list"),
        ("web-1\n:9100", "outside the host allow list"),
    ],
)
def test_a_host_the_policy_or_the_settings_do_not_admit_is_refused(
    tmp_path: Path, instance: str | None, reason: str
) -> None:
    [policy] = load(tmp_path, POLICY)
    match = match_alert([policy], labels(instance), CONFIGURED)
    assert match is not None and reason in match.refused, match


def test_a_fixed_host_and_the_default(tmp_path: Path) -> None:
    fixed = POLICY.replace(
        "  host:\n    from_label: instance\n    pattern: '^(?P<host>[^:]+):[0-9]+$'\n    allow: [\"web-[0-9]+\", db-1]\n",
        "  host: db-1\n",
    )
    [policy] = load(tmp_path, fixed)
    match = match_alert([policy], labels("whatever"), CONFIGURED)
    assert match is not None and match.host == "db-1" and not match.refused
    plain = fixed.replace("  host: db-1\n", "")
    [policy] = load(tmp_path, plain)
    match = match_alert([policy], labels(None), frozenset({"default"}))
    assert match is not None and match.host == "default" and not match.refused
    # A fleet without a host named default refuses a policy that names none.
    match = match_alert([policy], labels(None), CONFIGURED)
    assert match is not None and "docker host 'default' is not configured" in match.refused


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            ("pattern: '^(?P<host>[^:]+):[0-9]+$'", "pattern: '^([^:]+):[0-9]+$'"),
            "has no (?P<host>...) group",
        ),
        (("pattern: '^(?P<host>[^:]+):[0-9]+$'", "pattern: '^(?P<host>a)\\1$'"), "host pattern"),
        (("kind: container", "kind: postgres"), "target.host is for Docker targets"),
    ],
)
def test_a_host_spec_with_a_mistake_is_refused_at_load_with_its_line(
    tmp_path: Path, change: tuple[str, str], reason: str
) -> None:
    text = POLICY.replace(*change)
    if "postgres" in change[1]:
        text = text.replace("act: container.restart", "act: postgres.terminate_idle")
    with pytest.raises(PolicyError) as info:
        load(tmp_path, text)
    assert reason in str(info.value) and "p.yaml:" in str(info.value)


def test_a_fixed_host_must_be_a_host_name(tmp_path: Path) -> None:
    text = POLICY.replace(
        "  host:\n    from_label: instance\n    pattern: '^(?P<host>[^:]+):[0-9]+$'\n    allow: [\"web-[0-9]+\", db-1]\n",
        "  host: 'tcp://evil:2375'\n",
    )
    with pytest.raises(PolicyError) as info:
        load(tmp_path, text)
    assert "p.yaml:" in str(info.value) and "host" in str(info.value)


def test_settings_name_every_host_and_show_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = {
        "web-1": {"url": "tcp://web-1:2376", "tls": {"ca": "/ca.pem", "cert": "/c.pem", "key": "/k.pem"}},
        "db-1": {"url": "ssh://ops:hunter2@db-1", "threads": 2, "timeout_s": 5},
    }
    monkeypatch.setenv("REMEDIATOR_DOCKER__HOSTS", json.dumps(hosts))
    fleet = Settings().docker.fleet()
    assert set(fleet) == {"web-1", "db-1"}
    assert fleet["db-1"] is not None and fleet["db-1"].threads == 2
    assert shown_url("ssh://ops:hunter2@db-1") == "ssh://ops@db-1"
    assert shown_url("tcp://u:p@h:2376/x") == "tcp://u@h:2376/x"
    monkeypatch.setenv("REMEDIATOR_DOCKER__HOSTS", json.dumps({"web 1": {"url": "unix:///x.sock"}}))
    with pytest.raises(ValueError, match="docker host name"):
        Settings()
    monkeypatch.setenv("REMEDIATOR_DOCKER__HOSTS", json.dumps({"w": {"url": "http://x"}}))
    with pytest.raises(ValueError):
        Settings()


def test_single_host_settings_are_the_host_named_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REMEDIATOR_DOCKER__HOSTS", raising=False)
    monkeypatch.setenv("REMEDIATOR_DOCKER__HOST", "unix:///run/x.sock")
    fleet = Settings().docker.fleet()
    assert list(fleet) == ["default"] and fleet["default"] is not None
    assert fleet["default"].url == "unix:///run/x.sock"


def test_breaker_metrics_name_their_host() -> None:
    assert breaker_host("backend:docker:web-1") == "web-1"
    assert breaker_host("container:web-1/sms-db") == "web-1"
    assert breaker_host("container:sms-db") == "default"
    assert breaker_host("backend:postgres") == ""
    assert breaker_host("notify:oncall") == ""


def test_simulate_prints_the_host_it_would_use_or_why_not(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from helpers import alert, notification

    (tmp_path / "app.yaml").write_text(POLICY)
    hosts = {
        "web-1": {"url": "unix:///nonexistent/web-1.sock"},
        "db-1": {"url": "unix:///nonexistent/db.sock"},
    }
    env = {**os.environ, "REMEDIATOR_DOCKER__HOSTS": json.dumps(hosts)}
    body = notification(
        alert("AppDown", fingerprint="a", container="app-1", instance="web-1:9100"),
        alert("AppDown", fingerprint="b", container="app-1", instance="web-2:9100"),
    )
    payload = tmp_path / "alerts.json"
    payload.write_text(json.dumps(body))
    done = subprocess.run(
        [sys.executable, "-m", "remediator", "simulate", "--policies", str(tmp_path), str(payload)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.split("alert AppDown")[1:3]
    assert "host    web-1" in first and "REFUSED" not in first
    # web-2 passes the policy's allow list but is not configured here.
    assert "REFUSED docker host 'web-2' is not configured" in second
