"""Shared fixtures: the real parts from tests/realparts/, and a capture server for receivers that cannot run here.

Each fixture closes what it started in a finally block, so a failing test leaves no process, port or
directory behind. None of them imports remediator: the infrastructure must work while the code under
test is broken or half-written.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from realparts import (
    Alertmanager,
    AlertmanagerFactory,
    CaptureServer,
    DockerDaemon,
    Postgres,
    Prometheus,
    PrometheusFactory,
)


def pytest_configure(config: pytest.Config) -> None:
    # A run stopped with SIGTERM (a CI time limit, a killed terminal) would otherwise skip every teardown
    # and leave dockerd and PostgreSQL running; treated like Ctrl-C, pytest tears the fixtures down.
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)


# ---------------------------------------------------------------------------------------------------------
# Real parts


@pytest.fixture(scope="session")
def docker_daemon() -> Iterator[DockerDaemon]:
    """A private dockerd shared by the session; tests name their containers uniquely or reuse names
    (run_container replaces a leftover of the same name)."""
    daemon = DockerDaemon()
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL shared by the session; connect with postgres.dsn."""
    pg = Postgres()
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture
def alertmanager_factory() -> Iterator[AlertmanagerFactory]:
    """Starts Alertmanagers posting to a webhook: factory(webhook_url, token, group_by=..., ...)."""
    started: list[Alertmanager] = []

    def start(webhook_url: str, token: str, **kwargs: Any) -> Alertmanager:
        am = Alertmanager(webhook_url, token, **kwargs)
        started.append(am)
        return am

    try:
        yield start
    finally:
        for am in reversed(started):
            am.close()


@pytest.fixture
def prometheus_factory() -> Iterator[PrometheusFactory]:
    """Starts Prometheus servers: factory(config_text, rule_files=[(name, text)], ...)."""
    started: list[Prometheus] = []

    def start(config: str, **kwargs: Any) -> Prometheus:
        prom = Prometheus(config, **kwargs)
        started.append(prom)
        return prom

    try:
        yield start
    finally:
        for prom in reversed(started):
            prom.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB filesystem (tmpfs) that can be filled (../shared/TESTING.md, "A full disk"; helpers.fill)."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (scripts/dev test runs as root)", pytrace=False)
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# ---------------------------------------------------------------------------------------------------------
# Capture server


@pytest_asyncio.fixture
async def capture_server() -> AsyncIterator[CaptureServer]:
    """An aiohttp server on 127.0.0.1 recording every request: .url, .requests, .fail_first(n, status),
    await .wait_for(n, timeout=10)."""
    server = CaptureServer()
    try:
        await server.start()
        yield server
    finally:
        await server.close()


# ---------------------------------------------------------------------------------------------------------
# Engine rigs (tests/engine_rig.py), closed after each test


@pytest_asyncio.fixture
async def rigs() -> AsyncIterator[list[Any]]:
    from engine_rig import close_all  # imported here: the fixtures above must work without remediator

    made: list[Any] = []
    try:
        yield made
    finally:
        await close_all(made)


@pytest_asyncio.fixture
async def start_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    """``await start_app(**env)``: remediator in-process on a free port, with ``settings_env(tmp_path)`` plus
    ``env``. ``policies={"db.yaml": TEXT}`` replaces the shipped policies, ``unset=[NAME]`` removes variables,
    ``clock=`` and ``retry=`` go to App. Each call is a new daemon on the same state directory; whatever is
    still running is stopped after the test."""
    from helpers import settings_env  # imported here: the fixtures above must work without remediator

    from remediator.app import App
    from remediator.domain.clock import system_clock
    from remediator.settings import Settings

    started: list[App] = []

    async def start(
        *,
        policies: dict[str, str] | None = None,
        unset: Iterable[str] = (),
        clock: Any = system_clock,
        retry: Any = None,
        **env: str,
    ) -> App:
        if policies is not None:
            directory = tmp_path / "policies"
            directory.mkdir(exist_ok=True)
            for name, text in policies.items():
                (directory / name).write_text(text)
            env = {"REMEDIATOR_POLICIES_DIR": str(directory), **env}
        for key, value in settings_env(tmp_path, **env).items():
            monkeypatch.setenv(key, value)
        for key in unset:
            monkeypatch.delenv(key, raising=False)
        app = App(Settings(), clock=clock, retry=retry)
        await app.start()
        started.append(app)
        return app

    try:
        yield start
    finally:
        for app in started:
            await app.stop()


# ---------------------------------------------------------------------------------------------------------
# Stores: every store test runs against SQLite and against the throwaway PostgreSQL


@pytest.fixture
def fresh_pg_url(postgres: Postgres) -> Iterator[str]:
    """A new, empty database on the session's PostgreSQL; dropped afterwards."""
    import subprocess
    import uuid

    name = f"t_{uuid.uuid4().hex[:12]}"

    def psql(sql: str) -> None:
        subprocess.run(
            ["psql", postgres.dsn, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True, capture_output=True
        )

    psql(f'CREATE DATABASE "{name}"')
    try:
        yield postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        psql(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """``sqlite:PATH`` or a PostgreSQL URL of a fresh database."""
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'store.sqlite3'}"
    else:
        yield request.getfixturevalue("fresh_pg_url")
