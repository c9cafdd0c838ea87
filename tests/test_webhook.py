"""The webhook's contract with Alertmanager: authentication, limits, clear 4xx errors, stored before 200."""

from __future__ import annotations

import base64
import errno
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from helpers import TOKEN, alert, notification

from remediator.app import App

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest_asyncio.fixture
async def daemon(start_app: Callable[..., Any]) -> App:
    app: App = await start_app(REMEDIATOR_DOCKER__HOST="unix:///nonexistent.sock")
    return app


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def url(app: App, path: str = "/alerts") -> str:
    return f"http://127.0.0.1:{app.port}{path}"


async def post(
    http: aiohttp.ClientSession, app: App, body: object, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(
        url(app),
        data=data,
        headers={"Content-Type": "application/json", **(AUTH if headers is None else headers)},
    ) as r:
        return r.status, await r.json()


async def test_a_valid_notification_is_stored_before_the_200(
    daemon: App, http: aiohttp.ClientSession
) -> None:
    body = notification(alert(container="nosuch-unmatched", alertname="SomethingElse"))
    status, answer = await post(http, daemon, body)
    assert status == 200 and answer["status"] == "accepted" and answer["alerts"] == 1
    # The row exists the moment the answer is out, whatever intake has done since.
    rows = await daemon.store._run(lambda db: db.execute("SELECT id, body FROM inbox").fetchall())
    assert [(r["id"], json.loads(r["body"])) for r in rows] == [(answer["inbox_id"], body)]


async def test_a_store_that_cannot_persist_gets_503_so_alertmanager_retries(
    daemon: App, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    status, answer = await post(http, daemon, notification(alert()))
    assert status == 503 and "retry" in str(answer["error"])
    monkeypatch.undo()
    # Not acknowledged now either (the disk may have dropped pages), and an orchestrator sees it.
    status, _ = await post(http, daemon, notification(alert()))
    assert status == 503
    async with http.get(url(daemon, "/readyz")) as r:
        assert r.status == 503 and "disk failed" in (await r.json())["error"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Token {TOKEN}"},
        {"Authorization": "Basic !!notbase64"},
    ],
)
async def test_missing_or_wrong_credentials_get_401(
    daemon: App, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    status, answer = await post(http, daemon, notification(alert()), headers=headers)
    assert status == 401
    assert "credentials" in str(answer["error"])
    assert await daemon.store.inbox_pending() == []
    rows = await daemon.store._run(lambda db: db.execute("SELECT count(*) FROM inbox").fetchone()[0])
    assert rows == 0


async def test_basic_auth_with_the_token_as_password_is_accepted(
    daemon: App, http: aiohttp.ClientSession
) -> None:
    basic = base64.b64encode(f"alertmanager:{TOKEN}".encode()).decode()
    status, _ = await post(
        http, daemon, notification(alert(alertname="X")), headers={"Authorization": f"Basic {basic}"}
    )
    assert status == 200
    wrong = base64.b64encode(b"alertmanager:nope").decode()
    status, _ = await post(
        http, daemon, notification(alert(alertname="X")), headers={"Authorization": f"Basic {wrong}"}
    )
    assert status == 401


async def test_malformed_json_gets_400_with_the_reason(daemon: App, http: aiohttp.ClientSession) -> None:
    status, answer = await post(http, daemon, b'{"version": "4", "alerts": [')
    assert status == 400
    assert "not JSON" in str(answer["error"])


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b.update(version="3"), "version"),
        (lambda b: b.update(alerts=[]), "alerts"),
        (lambda b: b["alerts"][0].pop("fingerprint"), "alerts.0.fingerprint"),
        (lambda b: b["alerts"][0].update(status="burning"), "alerts.0.status"),
        (lambda b: b["alerts"][0].update(labels={"alertname": 5}), "alerts.0.labels.alertname"),
        (lambda b: b["alerts"][0].update(startsAt="yesterday"), "alerts.0.startsAt"),
    ],
)
async def test_payloads_that_are_not_webhook_v4_get_400_naming_the_field(
    daemon: App, http: aiohttp.ClientSession, mutate: object, reason: str
) -> None:
    body = notification(alert())
    mutate(body)  # type: ignore[operator]
    status, answer = await post(http, daemon, body)
    assert status == 400
    assert reason in str(answer["error"])


async def test_a_json_array_or_scalar_gets_400(daemon: App, http: aiohttp.ClientSession) -> None:
    for body in ([1, 2], "text", None):
        status, _ = await post(http, daemon, body)
        assert status == 400


async def test_unknown_fields_are_tolerated(daemon: App, http: aiohttp.ClientSession) -> None:
    body = notification(alert(alertname="X"))
    body["futureField"] = {"a": 1}
    body["alerts"][0]["silencedBy"] = []
    status, _ = await post(http, daemon, body)
    assert status == 200


async def test_an_oversized_body_gets_413(daemon: App, http: aiohttp.ClientSession) -> None:
    body = notification(alert(alertname="X", padding="x" * (1024 * 1024 + 10)))
    status, answer = await post(http, daemon, body)
    assert status == 413
    assert "1048576" in str(answer["error"])


async def test_an_oversized_chunked_body_gets_413(daemon: App, http: aiohttp.ClientSession) -> None:
    async def chunks():  # no Content-Length: the limit must hold while reading
        for _ in range(300):
            yield b"x" * 4096

    async with http.post(
        url(daemon), data=chunks(), headers={"Content-Type": "application/json", **AUTH}
    ) as r:
        assert r.status == 413


async def test_a_wrong_content_type_gets_415(daemon: App, http: aiohttp.ClientSession) -> None:
    async with http.post(
        url(daemon), data=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded", **AUTH}
    ) as r:
        assert r.status == 415
        assert "application/json" in (await r.json())["error"]


async def test_health_and_metrics_need_no_token(daemon: App, http: aiohttp.ClientSession) -> None:
    async with http.get(url(daemon, "/healthz")) as r:
        assert r.status == 200
    async with http.get(url(daemon, "/readyz")) as r:
        assert r.status == 200 and (await r.json())["status"] == "ready"
    await post(http, daemon, b"{")
    async with http.get(url(daemon, "/metrics")) as r:
        text = await r.text()
    assert 'remediator_webhook_rejected_total{code="400"} 1.0' in text
    await post(http, daemon, b"{}", headers={})
    for stray in ("/favicon.ico", "/api/incidents"):  # a browser, a person: not a misconfigured Alertmanager
        async with http.get(url(daemon, stray)) as r:
            assert r.status == 401
    async with http.get(url(daemon, "/metrics")) as r:
        assert 'remediator_webhook_rejected_total{code="401"} 1.0' in await r.text()
    assert f"remediator_policies_loaded {len(daemon.policies)}.0" in text and len(daemon.policies) >= 2


async def test_the_incident_api_needs_the_token(daemon: App, http: aiohttp.ClientSession) -> None:
    async with http.get(url(daemon, "/api/incidents")) as r:
        assert r.status == 401
    async with http.get(url(daemon, "/api/incidents"), headers=AUTH) as r:
        assert r.status == 200 and (await r.json()) == {"incidents": []}
    async with http.get(url(daemon, "/api/incidents/99"), headers=AUTH) as r:
        assert r.status == 404


async def test_without_a_configured_token_one_is_generated_and_required(
    tmp_path: Path, start_app: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    app = await start_app(unset=["REMEDIATOR_SERVER__TOKEN"])
    token_file = tmp_path / "state" / "token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    token = token_file.read_text().strip()
    assert len(token) >= 32
    status, _ = await post(http, app, notification(alert(alertname="X")), headers={})
    assert status == 401
    status, _ = await post(
        http, app, notification(alert(alertname="X")), headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200


async def test_auth_can_be_turned_off_explicitly(
    start_app: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    app = await start_app(REMEDIATOR_SERVER__AUTH_DISABLED="true", unset=["REMEDIATOR_SERVER__TOKEN"])
    status, _ = await post(http, app, notification(alert(alertname="X")), headers={})
    assert status == 200


async def test_the_token_can_come_from_a_file(
    tmp_path: Path, start_app: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-a-docker-secret\n")
    app = await start_app(
        REMEDIATOR_SERVER__TOKEN_FILE=str(secret),
        REMEDIATOR_ESCALATION__TARGETS="",  # empty means unset, not a JSON error
        unset=["REMEDIATOR_SERVER__TOKEN"],
    )
    body = notification(alert(alertname="X"))
    assert (await post(http, app, body, headers={"Authorization": f"Bearer {TOKEN}"}))[0] == 401
    assert (await post(http, app, body, headers={"Authorization": "Bearer from-a-docker-secret"}))[0] == 200
