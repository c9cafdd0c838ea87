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
        "db-1": {"url": "ssh://ops@db-1", "threads": 2, "timeout_s": 5},
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


def test_a_host_url_with_a_password_is_refused_without_repeating_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in (
        "ssh://ops:s3cret@db-1",
        "tcp://bob:hunter2@10.0.0.1:2376",
        "tcp://h:2375/?x=1",
        "tcp://u:pa/ss@h:1",
    ):
        monkeypatch.setenv("REMEDIATOR_DOCKER__HOSTS", json.dumps({"h": {"url": url}}))
        with pytest.raises(ValueError) as info:
            Settings()
        message = str(info.value)
        assert "password" in message or "query" in message, message
        for secret in ("s3cret", "hunter2", "pa/ss"):
            assert secret not in message.split("input_value")[0], message
    monkeypatch.setenv("REMEDIATOR_DOCKER__HOSTS", json.dumps({"h": {"url": "ssh://ops@db-1"}}))
    assert Settings().docker.hosts["h"].url == "ssh://ops@db-1"  # a user without a password is fine


class _Listener:
    """Counts connections; ``hang``: accepts and never answers (a daemon that hangs)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.held: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


async def test_a_plain_tcp_host_is_reached_directly_never_through_a_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    from remediator.actions.docker import DockerBackend

    proxy = _Listener()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket is closed
    for variable in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(variable, f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    backend = DockerBackend(f"tcp://127.0.0.1:{closed}", timeout_s=2, threads=1, host_name="web-1")
    try:
        health = await backend.probe()
        assert health.reachable is False and health.last_error
        assert proxy.accepted == 0
    finally:
        backend.close()
        proxy.close()


async def test_a_host_that_hangs_reads_as_unreachable_and_is_probed_once_at_a_time() -> None:
    from remediator.actions.docker import DockerBackend
    from remediator.actions.fleet import DockerFleet

    hung = _Listener()
    backend = DockerBackend(f"tcp://127.0.0.1:{hung.port}", timeout_s=5, threads=2, host_name="web-1")
    fleet = DockerFleet({"web-1": backend})
    try:
        for _ in range(3):
            [host] = await fleet.report(lambda name: "closed", fresh_s=0, probe_s=0.3)
            assert host["reachable"] is False and "no answer within 0.3s" in host["last_error"], host
        assert hung.accepted == 1  # the first probe still waits; no second one was started beside it
    finally:
        fleet.close()
        hung.close()


async def test_the_pre_fleet_docker_breaker_carries_on_under_its_new_name(tmp_path: Path) -> None:
    from remediator.domain.clock import system_clock
    from remediator.engine.breakers import Breakers
    from remediator.guards.breaker import BreakerConfig
    from remediator.metrics import Metrics
    from remediator.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "s.sqlite3")
    await store.open()
    try:
        now = system_clock()
        state = {"status": "open", "failures": [now], "opened_at": now, "probing_since": None}
        await store.breaker_save("backend:docker", state, now)
        breakers = Breakers(store, BreakerConfig(open_s=600), Metrics(), system_clock)
        await breakers.load()
        assert breakers.get("backend:docker:default").status == "open"
        assert "backend:docker" not in await store.breakers_load()
        assert (await store.breakers_load())["backend:docker:default"]["status"] == "open"
    finally:
        await store.close()


async def test_a_store_a_newer_version_migrated_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from remediator.errors import ConfigError
    from remediator.store.sqlite import SqliteStore

    path = tmp_path / "newer.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=999")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="schema version 999"):
        await SqliteStore(path).open()


def test_a_settings_error_never_repeats_a_secret() -> None:
    import os
    import subprocess
    import sys

    hosts = {"h h": {"url": "ssh://ops@x", "tls": {"ca": "/a", "cert": "/b", "key": "-----BEGIN KEY s3cret"}}}
    for variable, value in (
        ("REMEDIATOR_DOCKER__HOSTS", json.dumps({"h": {"url": "ssh://ops:s3cret@x"}})),
        ("REMEDIATOR_DOCKER__HOSTS", json.dumps(hosts)),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "remediator", "check", "policies"],
            env={**os.environ, variable: value},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and done.stderr.startswith("error: REMEDIATOR_DOCKER__HOSTS"), done.stderr
        assert "s3cret" not in done.stderr, done.stderr
