"""The command line as a user runs it: a real subprocess, real files, exit codes and output."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from helpers import REPO, TOKEN, alert, notification

FIXTURES = Path(__file__).parent / "fixtures"


def run(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remediator", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    """``remediator serve`` on a free port, once its /readyz answers 200."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "remediator", "serve", "--port", str(port)],
        cwd=REPO,
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.communicate()  # reaps it and closes the stderr pipe
                raise
            time.sleep(0.1)


def test_help_lists_the_commands_and_each_has_examples() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "check", "simulate", "incidents", "status", "hosts", "healthcheck", "store"):
        assert f"\n    {command} " in result.stdout or f"\n    {command}\n" in result.stdout, command
    listing = run("incidents", "--help").stdout
    assert "examples:\n  remediator incidents" in listing
    assert re.search(r"--status \{active,escalated,(\w+,)*resolved\}", listing)
    assert "-o {table,json}" in listing and "--url URL" in listing and "--token TOKEN" in listing


def test_check_accepts_the_shipped_policies() -> None:
    result = run("check", "policies")
    assert result.returncode == 0, result.stderr
    assert "database-down" in result.stdout and "policies valid" in result.stdout


def test_check_and_simulate_take_the_directory_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "only.yaml").write_text(
        "name: only-one\nmatch: [alertname = DatabaseDown]\n"
        "target: {kind: container, from_label: container, allow: [sms-db]}\nsteps:\n  - escalate: log\n"
    )
    by_flag = run("check", "--policies", str(tmp_path))
    assert by_flag.returncode == 0, by_flag.stderr
    assert "only-one" in by_flag.stdout and f"1 policies valid in {tmp_path}" in by_flag.stdout
    assert run("check", str(tmp_path)).stdout == by_flag.stdout
    by_variable = run("check", env={"REMEDIATOR_POLICIES_DIR": str(tmp_path)})
    assert by_variable.stdout == by_flag.stdout
    twice = run("check", "policies", "--policies", str(tmp_path))
    assert twice.returncode == 1 and "two policy directories" in twice.stderr
    simulated = run("simulate", "--policies", str(tmp_path), str(FIXTURES / "alertmanager_v4_firing.json"))
    assert simulated.returncode == 0, simulated.stderr
    assert "policy  only-one" in simulated.stdout and "1. escalate log" in simulated.stdout


def test_check_and_simulate_refuse_a_directory_with_no_policy(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("not a policy\n")
    checked = run("check", str(tmp_path))
    assert checked.returncode == 1
    assert checked.stderr == f"error: {tmp_path}: no policy (no *.yaml or *.yml file with one)\n"
    simulated = run("simulate", "--policies", str(tmp_path), str(FIXTURES / "alertmanager_v4_firing.json"))
    assert simulated.returncode == 1 and "no policy" in simulated.stderr


def test_check_refuses_a_broken_file_with_file_line_and_reason(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "name: x\nmatch: [alertname = X]\ntarget: {kind: container, from_label: c, allow: [a]}\n"
        "steps:\n  - act: container.restart\n    verify: {resolved_within_s: 10}\n    atempts: 2\n"
    )
    result = run("check", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path / 'bad.yaml'}:7:" in result.stderr and "atempts" in result.stderr


def test_simulate_shows_policy_target_and_steps_and_acts_on_nothing() -> None:
    result = run("simulate", str(FIXTURES / "alertmanager_v4_firing.json"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "policy  database-down" in out and "target  container sms-db" in out
    assert "diagnose container.logs" in out and "act container.restart" in out and "escalate oncall" in out
    assert "nothing was executed" in out


def test_simulate_shows_a_refused_target(tmp_path: Path) -> None:
    payload = json.dumps(notification(alert(container="sms-db; rm -rf /")))
    result = run("simulate", "-", stdin=payload)
    assert result.returncode == 0
    assert "REFUSED" in result.stdout and "outside the allow list" in result.stdout


def test_simulate_refuses_a_bad_payload() -> None:
    result = run("simulate", "-", stdin='{"version": "3"}')
    assert result.returncode == 1 and "not an Alertmanager webhook v4 payload" in result.stderr


def test_serve_answers_then_drains_on_sigterm_and_the_commands_call_it(tmp_path: Path) -> None:
    env = {
        "REMEDIATOR_STATE_DIR": str(tmp_path / "state"),
        "REMEDIATOR_SERVER__TOKEN": TOKEN,
        "REMEDIATOR_DOCKER__HOST": "unix:///nonexistent.sock",
        "REMEDIATOR_LOG__FORMAT": "json",
    }
    proc, port = start_serve(env)
    try:
        body = json.dumps(notification(alert(alertname="HighErrorRate", container="sms-db; x"))).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/alerts",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 200
        url = f"http://127.0.0.1:{port}"
        paused = run("pause", "--url", url, env=env)
        assert paused.returncode == 0 and "automation paused" in paused.stdout, paused.stderr
        status = run("status", "--url", url, env=env)
        assert status.returncode == 0, status.stderr
        assert "automation      PAUSED: no action runs" in status.stdout
        assert json.loads(run("status", "-o", "json", "--url", url, env=env).stdout)["paused"] is True
        assert "automation resumed" in run("resume", "--url", url, env=env).stdout
        assert json.loads(run("status", "-o", "json", "--url", url, env=env).stdout)["paused"] is False
        assert "automation      running\n" in run("status", "--url", url, env=env).stdout
        listed = run("policies", "--url", url, env=env)
        assert listed.returncode == 0 and listed.stdout.startswith("POLICY ")
        assert "database-down" in listed.stdout and "enforce" in listed.stdout
        shadowed = run("policies", "shadow", "high-error-rate", "--url", url, env=env)
        assert "policy high-error-rate is now shadow" in shadowed.stdout
        relisted = run("policies", "list", "--url", url, env=env).stdout
        assert re.search(r"\nhigh-error-rate +shadow \(file says enforce\) +policies/", relisted), relisted
        as_json = json.loads(run("policies", "-o", "json", "--url", url, env=env).stdout)
        assert {p["name"]: p["mode"] for p in as_json["policies"]}["high-error-rate"] == "shadow"
        assert "now enforce" in run("policies", "promote", "high-error-rate", "--url", url, env=env).stdout
        nothing = run("approve", "1", "--url", url, env=env)
        assert nothing.returncode == 1 and "no pending approval" in nothing.stderr
        denied = run("pause", "--url", url, env={**env, "REMEDIATOR_SERVER__TOKEN": "wrong"})
        assert denied.returncode == 1 and "401" in denied.stderr and "--token" in denied.stderr
        incidents = run("incidents", "list", "--url", url, env=env)
        assert incidents.returncode == 0, incidents.stderr
        assert incidents.stdout.splitlines()[0].split() == [
            "ID",
            "STATUS",
            "OPENED",
            "(UTC)",
            "POLICY",
            "TARGET",
            "REASON",
        ]
        assert "high-error-rate" in incidents.stdout and "escalated" in incidents.stdout
        shown = run("incidents", "show", "1", "--url", url, env=env)
        assert shown.returncode == 0 and "opened" in shown.stdout and "outside the allow list" in shown.stdout
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate()  # reaps it and closes the stderr pipe, on failure too
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any("listening" in entry["msg"] for entry in logs)
    assert any(entry["msg"].startswith("stopping") for entry in logs)
    gone = run("incidents", "--url", url, env=env)
    assert gone.returncode == 1 and "is `remediator serve` running there?" in gone.stderr


def test_the_cli_finds_the_token_where_the_daemon_does_with_only_a_token_file_set(tmp_path: Path) -> None:
    token_file = tmp_path / "token.secret"
    token_file.write_text("from-the-token-file-0123456789\n")
    env = {
        "REMEDIATOR_STATE_DIR": str(tmp_path / "state"),
        "REMEDIATOR_SERVER__TOKEN_FILE": str(token_file),
        "REMEDIATOR_DOCKER__HOST": "unix:///nonexistent.sock",
    }
    proc, port = start_serve(env)
    try:
        status = run("status", "-o", "json", "--url", f"http://127.0.0.1:{port}", env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["paused"] is False
        other = tmp_path / "other.secret"
        other.write_text("another-token\n")
        denied = run(
            "status",
            "--url",
            f"http://127.0.0.1:{port}",
            env={**env, "REMEDIATOR_SERVER__TOKEN_FILE": str(other)},
        )
        assert denied.returncode == 1 and "401" in denied.stderr
    finally:
        proc.terminate()
        proc.communicate(timeout=20)  # reaps it and closes the stderr pipe
    assert not (tmp_path / "state" / "token").exists(), "neither side generated a token of its own"


def test_simulate_refuses_a_payload_larger_than_the_webhook_takes(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (2 * 1024 * 1024) + b"{}")  # 2 MiB of nothing: read in full before, now refused
    done = subprocess.run(
        [sys.executable, "-m", "remediator", "simulate", str(big)],
        capture_output=True,
        text=True,
        env={**os.environ, "REMEDIATOR_STATE_DIR": str(tmp_path / "state")},
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 1 and "over 1048576 bytes" in done.stderr and "Traceback" not in done.stderr


def test_a_bad_setting_is_one_line_and_exit_2_on_every_command(tmp_path: Path) -> None:
    for command in (["check", str(REPO / "policies")], ["incidents"], ["serve"], ["status"]):
        done = subprocess.run(
            [sys.executable, "-m", "remediator", *command],
            capture_output=True,
            text=True,
            env={**os.environ, "REMEDIATOR_STATE_DIR": str(tmp_path), "REMEDIATOR_SERVER__PORT": "abc"},
            cwd=REPO,
            timeout=60,
        )
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.strip().splitlines() == [
            "error: REMEDIATOR_SERVER__PORT: Input should be a valid integer, unable to parse string as an"
            " integer: 'abc'"
        ], command


def test_store_stats_creates_no_store_where_there_is_none(tmp_path: Path) -> None:
    done = run("store", "stats", cwd=tmp_path, env={"REMEDIATOR_STATE_DIR": str(tmp_path / "state")})
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: no store at {tmp_path / 'state' / 'remediator.sqlite3'} ")
    assert list(tmp_path.iterdir()) == []
