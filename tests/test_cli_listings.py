"""The listings a person reads (incidents, status, policies, hosts): headers, ``-o json``, the status filter, a
pending approval shown as such; the CLI finds the daemon and its token from the settings alone, from any
directory, and creates no store there. A real ``remediator serve`` and the CLI as subprocesses."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, TOKEN, alert, notification
from test_healthcheck import free_port, serving
from test_webhook_hardening import make_certs

POLICIES = """\
name: needs-approval
match: [alertname = NeedsApproval]
target: {kind: container, from_label: container, allow: [web]}
steps:
  - act: container.restart
    approval: {timeout_s: 600, on_timeout: deny}
    verify: {resolved_within_s: 60}
  - escalate: log
---
name: refused-one
match: [alertname = HighErrorRate]
target: {kind: container, from_label: container, allow: [web]}
steps:
  - act: container.restart
    verify: {resolved_within_s: 60}
  - escalate: log
"""


def cli(*args: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    # Only what the test gives: no REMEDIATOR_* of the surrounding shell leaks in.
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("REMEDIATOR_")}
    return subprocess.run(
        [sys.executable, "-m", "remediator", *args],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def post(port: int, *alerts: dict[str, object]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/alerts",
        data=json.dumps(notification(*alerts)).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        assert r.status == 200


def api(port: int, path: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        answer = json.loads(r.read())
        assert isinstance(answer, dict)
        return answer


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """A daemon with an approval policy, whose incident 1 waits for approval and incident 2 escalated; the
    token is in a file (a Docker secret), as the settings a client on the same machine has."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(POLICIES)
    (tmp_path / "token.secret").write_text(TOKEN + "\n")
    port = free_port()
    env = {
        "REMEDIATOR_STATE_DIR": str(tmp_path / "state"),
        "REMEDIATOR_POLICIES_DIR": str(tmp_path / "policies"),
        "REMEDIATOR_SERVER__PORT": str(port),
        "REMEDIATOR_SERVER__TOKEN_FILE": str(tmp_path / "token.secret"),
        "REMEDIATOR_DOCKER__HOST": "unix:///nonexistent.sock",
        "REMEDIATOR_PROMETHEUS__URL": "",
    }
    with serving(env, port):
        post(port, alert(alertname="NeedsApproval", fingerprint="a", container="web"))
        post(port, alert(alertname="HighErrorRate", fingerprint="b", container="db; x"))
        deadline = time.monotonic() + 20
        while True:
            kinds = [e["kind"] for e in api(port, "/api/incidents/1")["timeline"]]  # type: ignore[index]
            escalated = api(port, "/api/incidents?status=escalated")["incidents"]
            if "approval_requested" in kinds and escalated:
                break
            assert time.monotonic() < deadline, kinds
            time.sleep(0.1)
        yield port, env


def test_incidents_listing_filter_json_and_a_pending_approval(
    tmp_path: Path, daemon: tuple[int, dict[str, str]]
) -> None:
    _, env = daemon
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # From another directory, with only the daemon's settings: no --url, no --token.
    listed = cli("incidents", env=env, cwd=elsewhere)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert re.fullmatch(r"ID +STATUS +OPENED \(UTC\) +POLICY +TARGET +REASON", lines[0])
    waiting = next(line for line in lines if line.startswith("1 "))
    assert re.match(r"1 +awaiting approval +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +needs-approval +web +", waiting)
    assert "container.restart on web waits for approval: `remediator approve|deny 1`" in waiting
    assert "it is denied and escalated" in waiting
    refused = next(line for line in lines if line.startswith("2 "))
    assert re.match(
        r"2 +escalated +.* refused-one +db; x +container='db; x' is outside the allow list", refused
    )
    assert list(elsewhere.iterdir()) == [], "the CLI created nothing where it ran (no store, no token)"

    only = cli("incidents", "list", "--status", "escalated", env=env).stdout.splitlines()
    assert len(only) == 2 and only[1].startswith("2 ")
    assert (
        cli("incidents", "--status", "resolved", env=env).stdout.splitlines()[1] == "(no resolved incidents)"
    )

    as_json = json.loads(cli("incidents", "-o", "json", env=env).stdout)
    by_id = {i["id"]: i for i in as_json["incidents"]}
    assert by_id[1]["status"] == "active" and by_id[1]["pending_approval"]["step"] == "container.restart"
    assert by_id[1]["pending_approval"]["on_timeout"] == "deny"
    assert "pending_approval" not in by_id[2] and by_id[2]["status"] == "escalated"

    shown = cli("incidents", "show", "1", env=env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("incident 1: needs-approval on web, awaiting approval, severity critical")
    assert "\napproval: container.restart on web waits for approval" in shown.stdout
    assert re.search(r"\nAT \(UTC\) +WHAT +DETAIL\n", shown.stdout)
    assert re.search(r"\n\S+ \S+ +approval_requested +\{", shown.stdout)
    shown_json = json.loads(cli("incidents", "show", "1", "-o", "json", env=env).stdout)
    assert shown_json["pending_approval"]["step"] == "container.restart" and shown_json["timeline"]

    approved = cli("approve", "1", env=env)
    assert approved.returncode == 0 and approved.stdout == "incident 1: approved\n", approved.stderr
    after = cli("incidents", "show", "1", env=env).stdout
    assert "awaiting approval" not in after.splitlines()[0]
    missing = cli("incidents", "show", "99", env=env)
    assert missing.returncode == 1 and "no incident 99" in missing.stderr


def test_status_policies_and_hosts_read_as_tables_and_json(daemon: tuple[int, dict[str, str]]) -> None:
    _, env = daemon
    status = cli("status", env=env)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[:4] == [
        "automation      running",
        "dry run         off",
        "open incidents  2",
        "intake backlog  0",
    ]
    assert "{" not in status.stdout
    assert json.loads(cli("status", "-o", "json", env=env).stdout)["open_incidents"] == 2

    policies = cli("policies", env=env).stdout.splitlines()
    assert re.fullmatch(r"POLICY +MODE +SOURCE", policies[0])
    assert re.match(r"needs-approval +enforce +\S+/p\.yaml:1$", policies[1])
    assert [p["name"] for p in json.loads(cli("policies", "-o", "json", env=env).stdout)["policies"]] == [
        "needs-approval",
        "refused-one",
    ]

    hosts = cli("hosts", env=env)
    assert hosts.returncode == 0, hosts.stderr
    lines = hosts.stdout.splitlines()
    assert re.fullmatch(
        r"HOST +URL +REACHABLE +ENGINE +BREAKER +LATENCY +CHECKED \(UTC\) +LAST ERROR", lines[0]
    )
    assert re.match(r"default +unix:///nonexistent\.sock +NO +- +closed +", lines[1])
    listed = json.loads(cli("hosts", "-o", "json", env=env).stdout)["hosts"]
    assert [(h["name"], h["reachable"]) for h in listed] == [("default", False)]
    assert listed[0]["last_error"]


def test_the_token_flag_and_the_hints(tmp_path: Path, daemon: tuple[int, dict[str, str]]) -> None:
    port, env = daemon
    # A client whose settings hold no token (an empty state directory, no variable): --token is the way.
    bare = {"REMEDIATOR_SERVER__PORT": str(port), "REMEDIATOR_STATE_DIR": str(tmp_path / "empty")}
    refused = cli("status", env=bare)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: http://127.0.0.1:{port}/api/status answered 401")
    assert "--token" in refused.stderr
    assert cli("status", "--token", TOKEN, env=bare).returncode == 0
    assert not (tmp_path / "empty").exists(), "a client never generates a token"
    nobody = cli("status", "--url", f"http://127.0.0.1:{free_port()}", env=env)
    assert nobody.returncode == 1 and "is `remediator serve` running there?" in nobody.stderr
    assert len(nobody.stderr.splitlines()) == 1


def test_over_tls_the_cli_finds_the_daemon_and_trusts_its_certificate(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    port = free_port()
    env = {
        "REMEDIATOR_STATE_DIR": str(tmp_path / "state"),
        "REMEDIATOR_POLICIES_DIR": str(REPO / "policies"),
        "REMEDIATOR_SERVER__PORT": str(port),
        "REMEDIATOR_SERVER__TOKEN": TOKEN,
        "REMEDIATOR_DOCKER__HOST": "unix:///nonexistent.sock",
        "REMEDIATOR_SERVER__TLS_CERT": str(certs["server.pem"]),
        "REMEDIATOR_SERVER__TLS_KEY": str(certs["server.key"]),
    }
    with serving(env, port, ssl.create_default_context(cafile=str(certs["ca.pem"]))):
        pinned = cli("status", "-o", "json", env=env)
        assert pinned.returncode == 0, pinned.stderr
        assert json.loads(pinned.stdout)["paused"] is False
        named = cli("status", "--url", f"https://127.0.0.1:{port}", env=env)
        assert named.returncode == 0, named.stderr
        # Another certificate in the settings than the one the daemon serves: refused, not trusted blindly.
        (tmp_path / "other").mkdir()
        other = make_certs(tmp_path / "other")
        stranger = cli("status", env={**env, "REMEDIATOR_SERVER__TLS_CERT": str(other["server.pem"])})
        assert stranger.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in stranger.stderr


def test_serve_with_no_policy_warns_at_start(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    port = free_port()
    env = {
        "REMEDIATOR_STATE_DIR": str(tmp_path / "state"),
        "REMEDIATOR_POLICIES_DIR": str(tmp_path / "policies"),
        "REMEDIATOR_SERVER__PORT": str(port),
        "REMEDIATOR_SERVER__TOKEN": TOKEN,
        "REMEDIATOR_DOCKER__HOST": "unix:///nonexistent.sock",
        "REMEDIATOR_LOG__FORMAT": "json",
    }
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "remediator", "serve"],
            cwd=REPO,
            env={**os.environ, **env},
            stderr=out,
        )
        try:
            deadline = time.monotonic() + 20
            while "listening" not in log.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    warned = [e for e in lines if e["level"].upper() == "WARNING" and e["msg"].startswith("no policy in")]
    assert len(warned) == 1, lines
    assert "every alert is recorded as unmatched and nothing runs" in warned[0]["msg"]
