"""REMEDIATOR_* variables that are no setting are warned about, with the nearest valid name, by every command;
broken settings stay one line each and exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

from remediator.env_check import problem, warnings


@pytest.mark.parametrize(
    ("name", "nearest"),
    [
        ("REMEDIATOR_SERVER__PROT", "REMEDIATOR_SERVER__PORT"),
        ("REMEDIATOR_SERVR__PORT", "REMEDIATOR_SERVER__PORT"),
        ("REMEDIATOR_POLICIES_DIRS", "REMEDIATOR_POLICIES_DIR"),
        ("REMEDIATOR_GUARDS__BREAKER__OPENS", "REMEDIATOR_GUARDS__BREAKER__OPEN_S"),
        ("remediator_log__formt", "REMEDIATOR_LOG__FORMAT"),
        # Under a mapping: any key, then the fields of its value.
        ("REMEDIATOR_ESCALATION__TARGETS__ONCALL__ULR", "REMEDIATOR_ESCALATION__TARGETS__ONCALL__URL"),
    ],
)
def test_a_typo_names_the_nearest_setting(name: str, nearest: str) -> None:
    assert problem(name) == f"{name} is not a setting; did you mean {nearest}?"


@pytest.mark.parametrize(
    "name",
    [
        "REMEDIATOR_SERVER__PORT",
        "remediator_server__port",  # the settings read names case-insensitively
        "REMEDIATOR_SERVER",  # a group, as JSON
        "REMEDIATOR_STATE_DIR",
        "REMEDIATOR_GUARDS__BREAKER__OPEN_S",
        "REMEDIATOR_ESCALATION__TARGETS",
        "REMEDIATOR_ESCALATION__TARGETS__ONCALL__URL",
        "REMEDIATOR_ESCALATION__ROUTING__PRIORITIES__CRIT",  # a mapping of plain values: any key
        "REMEDIATOR_REQUIRE_REAL_PARTS",  # ours, but the test suite's
        "DOCKER_HOST",
    ],
)
def test_settings_and_other_names_pass(name: str) -> None:
    assert problem(name) is None


def test_nothing_near_and_nothing_below() -> None:
    assert problem("REMEDIATOR_XYZZY") == (
        "REMEDIATOR_XYZZY is not a setting (the settings are in docs/operations.md#settings)"
    )
    assert problem("REMEDIATOR_SERVER__PORT__X") == (
        "REMEDIATOR_SERVER__PORT__X is not a setting: REMEDIATOR_SERVER__PORT has nothing under it"
    )


def test_the_env_file_is_checked_too(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("REMEDIATOR_SERVER__HOTS=0.0.0.0\nREMEDIATOR_SERVER__PORT=1\n")
    assert warnings({"REMEDIATOR_LOG__LEVL": "DEBUG", "HOME": "/"}, env_file) == [
        "warning: REMEDIATOR_LOG__LEVL is not a setting; did you mean REMEDIATOR_LOG__LEVEL?",
        f"warning: REMEDIATOR_SERVER__HOTS is not a setting; did you mean REMEDIATOR_SERVER__HOST? (in {env_file})",
    ]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remediator", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_command_warns_at_start_and_still_runs() -> None:
    checked = cli("check", "policies", REMEDIATOR_SERVER__PROT="9999")
    assert checked.returncode == 0
    assert checked.stderr.splitlines()[0] == (
        "warning: REMEDIATOR_SERVER__PROT is not a setting; did you mean REMEDIATOR_SERVER__PORT?"
    )
    simulated = cli("simulate", "tests/fixtures/alertmanager_v4_firing.json", REMEDIATOR_LOG__FORMT="json")
    assert simulated.returncode == 0
    assert "did you mean REMEDIATOR_LOG__FORMAT?" in simulated.stderr


def test_a_broken_setting_is_one_line_and_exit_2() -> None:
    broken = cli("check", "policies", REMEDIATOR_SERVER__PORT="abc")
    assert broken.returncode == 2
    assert broken.stderr.splitlines() == [
        "error: REMEDIATOR_SERVER__PORT: Input should be a valid integer, unable to parse string as an "
        "integer: 'abc'"
    ]


def test_bad_json_names_the_variable_in_one_line_and_exit_2() -> None:
    broken = cli("check", "policies", REMEDIATOR_ESCALATION__TARGETS='{"oncall": {url: 1}}')
    assert broken.returncode == 2
    assert broken.stderr.splitlines() == [
        "error: REMEDIATOR_ESCALATION__TARGETS: not valid JSON: Expecting property name enclosed in double "
        "quotes: line 1 column 13 (char 12)"
    ]


def test_serve_on_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = cli(
            "serve",
            "--port",
            str(port),
            REMEDIATOR_STATE_DIR=str(tmp_path),
            REMEDIATOR_DOCKER__HOST="unix:///nonexistent.sock",
        )
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        f"error: REMEDIATOR_SERVER__HOST/PORT: cannot listen on 127.0.0.1:{port}: address already in use"
    )


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "REMEDIATOR_STATE_DIR": str(tmp_path),
        "REMEDIATOR_SERVER__PORT": "0",
        "REMEDIATOR_DOCKER__HOST": "unix:///nonexistent.sock",
        **extra,
    }


@pytest.mark.parametrize(
    ("setting", "value", "line"),
    [
        (
            "TLS_CERT",
            "/nonexistent.pem",
            "REMEDIATOR_SERVER__TLS_CERT: cannot read /nonexistent.pem: No such file",
        ),
        ("TLS_CERT", "/etc/hostname", "REMEDIATOR_SERVER__TLS_CERT/TLS_KEY/TLS_CLIENT_CA: [SSL] PEM lib"),
        ("HOST", "no-such-host.invalid", "REMEDIATOR_SERVER__HOST: cannot resolve 'no-such-host.invalid': "),
    ],
)
def test_serve_names_the_listener_setting_it_cannot_use(
    tmp_path: Path, setting: str, value: str, line: str
) -> None:
    refused = cli("serve", **serve_env(tmp_path, **{f"REMEDIATOR_SERVER__{setting}": value}))
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    assert refused.stderr.splitlines()[-1].startswith(f"error: {line}"), refused.stderr


def test_a_docker_host_refused_when_used_is_one_line_and_exit_2(tmp_path: Path) -> None:
    refused = cli("serve", **serve_env(tmp_path, REMEDIATOR_DOCKER__HOST="foo://bar"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    # Named by the model and field it failed in; a URL is not repeated (it may hold a password).
    assert refused.stderr.splitlines()[-1] == (
        "error: DockerHost url: String should match pattern '^(unix|tcp|ssh|npipe)://'"
    )
