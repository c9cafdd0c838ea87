"""``remediator healthcheck`` against a real ``remediator serve``: plain HTTP, HTTPS, mutual TLS, a wildcard
listen address, and a daemon that is not there. Both processes get only environment variables, as a container's
HEALTHCHECK does."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import REPO, TOKEN
from test_webhook_hardening import make_certs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthcheck(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remediator", "healthcheck", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@contextmanager
def serving(env: dict[str, str], port: int, context: ssl.SSLContext | None = None) -> Iterator[None]:
    """``remediator serve`` with ``env``, once its /readyz (asked here, without the code under test) says 200."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "remediator", "serve"],
        cwd=REPO,
        env={**os.environ, **env},
        stderr=subprocess.DEVNULL,
    )
    url = f"{'https' if context else 'http'}://127.0.0.1:{port}/readyz"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1, context=context) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert proc.poll() is None, "serve exited"
                assert time.monotonic() < deadline, "serve never became ready"
                time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def base_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    return {
        "REMEDIATOR_STATE_DIR": str(tmp_path / "state"),
        "REMEDIATOR_POLICIES_DIR": str(REPO / "policies"),
        "REMEDIATOR_SERVER__PORT": str(port),
        "REMEDIATOR_SERVER__TOKEN": TOKEN,
        "REMEDIATOR_DOCKER__HOST": "unix:///nonexistent.sock",
        **extra,
    }


def test_plain_http_ready_then_gone(tmp_path: Path) -> None:
    port = free_port()
    # A wildcard listen address, as in a container: the probe asks the loopback.
    env = base_env(tmp_path, port, REMEDIATOR_SERVER__HOST="0.0.0.0")
    with serving(env, port):
        ready = healthcheck(env)
        assert ready.returncode == 0, ready.stderr
        assert ready.stdout.startswith(f"ok: http://127.0.0.1:{port}/readyz ready")
        assert len(ready.stdout.splitlines()) == 1
    gone = healthcheck(env)
    assert gone.returncode == 1
    assert gone.stderr.startswith(f"unhealthy: http://127.0.0.1:{port}/readyz: cannot reach it")
    assert len(gone.stderr.splitlines()) == 1 and gone.stdout == ""


def test_https_is_probed_where_serve_listens(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    port = free_port()
    env = base_env(
        tmp_path,
        port,
        REMEDIATOR_SERVER__TLS_CERT=str(certs["server.pem"]),
        REMEDIATOR_SERVER__TLS_KEY=str(certs["server.key"]),
    )
    trusting = ssl.create_default_context(cafile=str(certs["ca.pem"]))
    with serving(env, port, trusting):
        ready = healthcheck(env)
        assert ready.returncode == 0, ready.stderr
        assert ready.stdout.startswith(f"ok: https://127.0.0.1:{port}/readyz ready")
        # Plain HTTP to a TLS listener is not an answer.
        plain = healthcheck(env, "--url", f"http://127.0.0.1:{port}")
        assert plain.returncode == 1 and plain.stderr.startswith("unhealthy: ")


def test_mutual_tls_presents_the_daemons_own_certificate(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    port = free_port()
    env = base_env(
        tmp_path,
        port,
        REMEDIATOR_SERVER__TLS_CERT=str(certs["server.pem"]),
        REMEDIATOR_SERVER__TLS_KEY=str(certs["server.key"]),
        REMEDIATOR_SERVER__TLS_CLIENT_CA=str(certs["ca.pem"]),
    )
    client = ssl.create_default_context(cafile=str(certs["ca.pem"]))
    client.load_cert_chain(certs["client.pem"], certs["client.key"])
    with serving(env, port, client):
        ready = healthcheck(env)
        assert ready.returncode == 0, ready.stderr
        assert ready.stdout.startswith(f"ok: https://127.0.0.1:{port}/readyz ready")


def test_port_flag_and_unreadable_settings(tmp_path: Path) -> None:
    port = free_port()
    env = base_env(tmp_path, port)
    with serving(env, port):
        # serve --port elsewhere: the settings say another port, the flag says where to look.
        other = {**env, "REMEDIATOR_SERVER__PORT": str(free_port())}
        assert healthcheck(other).returncode == 1
        assert healthcheck(other, "--port", str(port)).returncode == 0
        bad = healthcheck({**env, "REMEDIATOR_SERVER__PORT": "abc"})
        # Docker reserves exit status 2; a broken setting is "unhealthy", in one line naming the variable.
        assert bad.returncode == 1
        assert bad.stderr.startswith("unhealthy: REMEDIATOR_SERVER__PORT: ")
        assert len(bad.stderr.splitlines()) == 1
        zero = healthcheck({**env, "REMEDIATOR_SERVER__PORT": "0"})
        assert zero.returncode == 1 and "give --port or --url" in zero.stderr
